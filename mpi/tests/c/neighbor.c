/* Neighbourhood collectives (MPI_Neighbor_* and MPI_Ineighbor_*) on a
 * periodic ring (a 1-D Cartesian topology, sizes 1 and 2 included, where
 * both neighbours are the same rank), a non-periodic 2-D grid (edges with
 * MPI_PROC_NULL untouched), a graph and a distributed graph with a double
 * edge, against what each neighbour must have sent. */
#include <string.h>
#include "check.h"

/* The value rank `from` sends in its out-slot `slot`, element `k`. */
static int val(int from, int slot, int k) { return 1000 * from + 10 * slot + k; }

static void check_alltoall(MPI_Comm c, int indeg, const int *src, const int *src_slot, int outdeg) {
    int sbuf[16 * 2], rbuf[16 * 2], me;
    MPI_Comm_rank(c, &me);
    for (int j = 0; j < outdeg; j++)
        for (int k = 0; k < 2; k++) sbuf[2 * j + k] = val(me, j, k);
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Neighbor_alltoall(sbuf, 2, MPI_INT, rbuf, 2, MPI_INT, c));
    for (int i = 0; i < indeg; i++)
        for (int k = 0; k < 2; k++)
            CHECK(rbuf[2 * i + k] == (src[i] == MPI_PROC_NULL ? -7 : val(src[i], src_slot[i], k)));
    /* Nonblocking, and the v-form with the blocks reversed in memory. */
    MPI_Request r;
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Ineighbor_alltoall(sbuf, 2, MPI_INT, rbuf, 2, MPI_INT, c, &r));
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    for (int i = 0; i < indeg; i++)
        if (src[i] != MPI_PROC_NULL) CHECK(rbuf[2 * i + 1] == val(src[i], src_slot[i], 1));
    int sc[16], sd[16], rc[16], rd[16];
    for (int j = 0; j < outdeg; j++) sc[j] = 2, sd[j] = 2 * j;
    for (int i = 0; i < indeg; i++) rc[i] = 2, rd[i] = 2 * (indeg - 1 - i);
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Neighbor_alltoallv(sbuf, sc, sd, MPI_INT, rbuf, rc, rd, MPI_INT, c));
    for (int i = 0; i < indeg; i++)
        if (src[i] != MPI_PROC_NULL) CHECK(rbuf[2 * (indeg - 1 - i)] == val(src[i], src_slot[i], 0));
    /* The w-form with byte displacements. */
    MPI_Aint swd[16], rwd[16];
    MPI_Datatype st[16], rt[16];
    for (int j = 0; j < outdeg; j++) swd[j] = 2 * j * sizeof(int), st[j] = MPI_INT;
    for (int i = 0; i < indeg; i++) rwd[i] = 2 * i * sizeof(int), rt[i] = MPI_INT;
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Neighbor_alltoallw(sbuf, sc, swd, st, rbuf, rc, rwd, rt, c));
    for (int i = 0; i < indeg; i++)
        if (src[i] != MPI_PROC_NULL) CHECK(rbuf[2 * i + 1] == val(src[i], src_slot[i], 1));
    /* allgather(v): every out-neighbour gets the same block. */
    int one[2] = {val(me, 0, 0), val(me, 0, 1)};
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Neighbor_allgather(one, 2, MPI_INT, rbuf, 2, MPI_INT, c));
    for (int i = 0; i < indeg; i++)
        if (src[i] != MPI_PROC_NULL) CHECK(rbuf[2 * i] == val(src[i], 0, 0) && rbuf[2 * i + 1] == val(src[i], 0, 1));
    for (int i = 0; i < 2 * indeg; i++) rbuf[i] = -7;
    OK(MPI_Ineighbor_allgatherv(one, 2, MPI_INT, rbuf, rc, rd, MPI_INT, c, &r));
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    for (int i = 0; i < indeg; i++)
        if (src[i] != MPI_PROC_NULL) CHECK(rbuf[2 * (indeg - 1 - i) + 1] == val(src[i], 0, 1));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);

    /* A periodic ring: slot 0 is rank-1, slot 1 rank+1; what I get in slot
     * 0 (from rank-1) is what it sent towards +1 (its slot 1). */
    MPI_Comm ring;
    int dims[2] = {size, 0}, per[2] = {1, 0};
    OK(MPI_Cart_create(MPI_COMM_WORLD, 1, dims, per, 0, &ring));
    {
        int src[2] = {(rank + size - 1) % size, (rank + 1) % size}, slot[2] = {1, 0};
        check_alltoall(ring, 2, src, slot, 2);
    }
    OK(MPI_Comm_free(&ring));

    /* A non-periodic 2-D grid. */
    MPI_Comm grid;
    dims[0] = dims[1] = 0;
    per[0] = per[1] = 0;
    OK(MPI_Dims_create(size, 2, dims));
    OK(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, per, 0, &grid));
    {
        int src[4], slot[4] = {1, 0, 3, 2};
        OK(MPI_Cart_shift(grid, 0, 1, &src[0], &src[1]));
        OK(MPI_Cart_shift(grid, 1, 1, &src[2], &src[3]));
        check_alltoall(grid, 4, src, slot, 4);
    }
    OK(MPI_Comm_free(&grid));

    /* A distributed graph: rank r sends twice to r+1 and once to itself;
     * it receives from r-1 twice (its slots 0 and 1 in order) and itself. */
    MPI_Comm dg;
    {
        int dst[3] = {(rank + 1) % size, (rank + 1) % size, rank};
        int src[3] = {(rank + size - 1) % size, (rank + size - 1) % size, rank};
        OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 3, src, MPI_UNWEIGHTED, 3, dst, MPI_UNWEIGHTED,
                                          MPI_INFO_NULL, 0, &dg));
        int slot[3] = {0, 1, 2};
        check_alltoall(dg, 3, src, slot, 3);
    }
    OK(MPI_Comm_free(&dg));

    /* A graph: a star around rank 0 (the neighbours both ways). */
    if (size > 1) {
        int index[16], edges[32], ne = 0;
        for (int i = 0; i < size; i++) {
            if (i == 0)
                for (int j = 1; j < size; j++) edges[ne++] = j;
            else
                edges[ne++] = 0;
            index[i] = ne;
        }
        MPI_Comm g;
        OK(MPI_Graph_create(MPI_COMM_WORLD, size, index, edges, 0, &g));
        int nn;
        OK(MPI_Graph_neighbors_count(g, rank, &nn));
        int nb[16], slot[16];
        OK(MPI_Graph_neighbors(g, rank, 16, nb));
        /* Rank 0 is neighbour j-1 of... rank j's only neighbour is 0 (slot
         * 0 there); rank 0's slot j-1 is rank j. */
        for (int i = 0; i < nn; i++) slot[i] = rank == 0 ? 0 : rank - 1;
        check_alltoall(g, nn, nb, slot, nn);
        OK(MPI_Comm_free(&g));
    }

    /* No topology: MPI_ERR_TOPOLOGY; MPI_IN_PLACE: MPI_ERR_ARG. */
    int x = 0, y = 0;
    FAILS(MPI_ERR_TOPOLOGY, MPI_Neighbor_allgather(&x, 1, MPI_INT, &y, 1, MPI_INT, MPI_COMM_WORLD));
    report_ok("neighbor");
    MPI_Finalize();
    return 0;
}
