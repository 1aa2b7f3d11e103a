/* Topologies against a serial model: Cartesian grids (create, get, rank,
 * coords, shift, sub, map, Dims_create), graphs, distributed graphs,
 * Topo_test; bad arguments under MPI_ERRORS_RETURN. */
#include <string.h>
#include "check.h"

/* Serial model of a row-major grid. */
static void model_coords(int r, int nd, const int *dims, int *c) {
    for (int i = nd - 1; i >= 0; i--) {
        c[i] = r % dims[i];
        r /= dims[i];
    }
}

int main(int argc, char **argv) {
    int rank, size;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int t;
    OK(MPI_Topo_test(MPI_COMM_WORLD, &t));
    CHECK(t == MPI_UNDEFINED);

    /* A 2-D grid of all ranks, periodic in the second dimension. */
    int dims[2] = {0, 0}, periods[2] = {0, 1};
    OK(MPI_Dims_create(size, 2, dims));
    CHECK(dims[0] * dims[1] == size && dims[0] >= dims[1]);
    MPI_Comm cart;
    OK(MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 1, &cart));
    CHECK(cart != MPI_COMM_NULL);
    OK(MPI_Comm_set_errhandler(cart, MPI_ERRORS_RETURN));
    OK(MPI_Topo_test(cart, &t));
    CHECK(t == MPI_CART);
    int nd, gd[2], gp[2], gc[2], mc[2], crank;
    OK(MPI_Cartdim_get(cart, &nd));
    CHECK(nd == 2);
    OK(MPI_Comm_rank(cart, &crank));
    OK(MPI_Cart_get(cart, 2, gd, gp, gc));
    model_coords(crank, 2, dims, mc);
    CHECK(gd[0] == dims[0] && gd[1] == dims[1] && gp[0] == 0 && gp[1] == 1);
    CHECK(gc[0] == mc[0] && gc[1] == mc[1]);
    for (int r = 0; r < size; r++) {
        int c[2], back;
        OK(MPI_Cart_coords(cart, r, 2, c));
        model_coords(r, 2, dims, mc);
        CHECK(c[0] == mc[0] && c[1] == mc[1]);
        OK(MPI_Cart_rank(cart, c, &back));
        CHECK(back == r);
    }
    /* Shifts: dimension 0 is not periodic, dimension 1 is. */
    int src, dst;
    OK(MPI_Cart_shift(cart, 0, 1, &src, &dst));
    CHECK(src == (gc[0] == 0 ? MPI_PROC_NULL : crank - dims[1]));
    CHECK(dst == (gc[0] == dims[0] - 1 ? MPI_PROC_NULL : crank + dims[1]));
    OK(MPI_Cart_shift(cart, 1, 1, &src, &dst));
    CHECK(src == gc[0] * dims[1] + (gc[1] + dims[1] - 1) % dims[1]);
    CHECK(dst == gc[0] * dims[1] + (gc[1] + 1) % dims[1]);
    /* A periodic coordinate out of range wraps; a non-periodic one is an error. */
    int wc[2] = {0, -1}, wr;
    OK(MPI_Cart_rank(cart, wc, &wr));
    CHECK(wr == dims[1] - 1);
    int oc[2] = {dims[0], 0};
    FAILS(MPI_ERR_ARG, MPI_Cart_rank(cart, oc, &wr));
    /* Exchange along the periodic dimension: each gets its left neighbour's rank. */
    int got = -1;
    OK(MPI_Cart_shift(cart, 1, 1, &src, &dst));
    OK(MPI_Sendrecv(&crank, 1, MPI_INT, dst, 5, &got, 1, MPI_INT, src, 5, cart, MPI_STATUS_IGNORE));
    CHECK(got == src);
    /* Rows: keep dimension 1. */
    int remain[2] = {0, 1};
    MPI_Comm row;
    OK(MPI_Cart_sub(cart, remain, &row));
    int rsize, rrank, rnd;
    OK(MPI_Comm_size(row, &rsize));
    OK(MPI_Comm_rank(row, &rrank));
    CHECK(rsize == dims[1] && rrank == gc[1]);
    OK(MPI_Cartdim_get(row, &rnd));
    CHECK(rnd == 1);
    int rowsum = 0;
    OK(MPI_Allreduce(&crank, &rowsum, 1, MPI_INT, MPI_SUM, row));
    int want = 0;
    for (int j = 0; j < dims[1]; j++) want += gc[0] * dims[1] + j;
    CHECK(rowsum == want);
    /* A dup keeps the topology. */
    MPI_Comm cd;
    OK(MPI_Comm_dup(cart, &cd));
    OK(MPI_Topo_test(cd, &t));
    CHECK(t == MPI_CART);
    OK(MPI_Comm_free(&cd));
    OK(MPI_Comm_free(&row));

    /* A grid smaller than the communicator: the others get MPI_COMM_NULL. */
    int one[1] = {1}, nop[1] = {0}, newrank;
    MPI_Comm small;
    OK(MPI_Cart_create(MPI_COMM_WORLD, 1, one, nop, 0, &small));
    CHECK((rank == 0) == (small != MPI_COMM_NULL));
    if (small != MPI_COMM_NULL) OK(MPI_Comm_free(&small));
    OK(MPI_Cart_map(MPI_COMM_WORLD, 1, one, nop, &newrank));
    CHECK(newrank == (rank == 0 ? 0 : MPI_UNDEFINED));

    /* A ring as a graph. */
    int index[4], edges[8], ne = 0;
    for (int i = 0; i < size; i++) {
        if (size > 1) edges[ne++] = (i + 1) % size;
        if (size > 2) edges[ne++] = (i + size - 1) % size;
        index[i] = ne;
    }
    MPI_Comm g;
    OK(MPI_Graph_create(MPI_COMM_WORLD, size, index, edges, 0, &g));
    OK(MPI_Topo_test(g, &t));
    CHECK(t == MPI_GRAPH);
    int nn, nedges, cnt, nb[4];
    OK(MPI_Graphdims_get(g, &nn, &nedges));
    CHECK(nn == size && nedges == ne);
    OK(MPI_Graph_neighbors_count(g, rank, &cnt));
    CHECK(cnt == (size > 2 ? 2 : size - 1));
    OK(MPI_Graph_neighbors(g, rank, 4, nb));
    if (size > 1) CHECK(nb[0] == (rank + 1) % size);
    int gi[4], ge[8];
    OK(MPI_Graph_get(g, 4, 8, gi, ge));
    CHECK(memcmp(gi, index, size * sizeof(int)) == 0 && memcmp(ge, edges, ne * sizeof(int)) == 0);
    OK(MPI_Comm_free(&g));

    /* A distributed graph: each rank sends to rank+1, with weight rank. */
    int to = (rank + 1) % size, from = (rank + size - 1) % size, w = rank;
    MPI_Comm dg;
    OK(MPI_Dist_graph_create(MPI_COMM_WORLD, 1, &rank, (int[]){1}, &to, &w, MPI_INFO_NULL, 0, &dg));
    int indeg, outdeg, weighted, s1, sw1, d1, dw1;
    OK(MPI_Dist_graph_neighbors_count(dg, &indeg, &outdeg, &weighted));
    CHECK(indeg == 1 && outdeg == 1 && weighted);
    OK(MPI_Dist_graph_neighbors(dg, 1, &s1, &sw1, 1, &d1, &dw1));
    CHECK(s1 == from && sw1 == from && d1 == to && dw1 == rank);
    OK(MPI_Topo_test(dg, &t));
    CHECK(t == MPI_DIST_GRAPH);
    OK(MPI_Comm_free(&dg));
    OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 1, &from, MPI_UNWEIGHTED, 1, &to, MPI_UNWEIGHTED, MPI_INFO_NULL, 0, &dg));
    OK(MPI_Dist_graph_neighbors_count(dg, &indeg, &outdeg, &weighted));
    CHECK(indeg == 1 && outdeg == 1 && !weighted);
    OK(MPI_Dist_graph_neighbors(dg, 1, &s1, MPI_UNWEIGHTED, 1, &d1, MPI_UNWEIGHTED));
    CHECK(s1 == from && d1 == to);
    OK(MPI_Comm_free(&dg));

    /* No edges but weighted: MPI_WEIGHTS_EMPTY. */
    OK(MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 0, NULL, MPI_WEIGHTS_EMPTY, 0, NULL, MPI_WEIGHTS_EMPTY, MPI_INFO_NULL, 0, &dg));
    OK(MPI_Dist_graph_neighbors_count(dg, &indeg, &outdeg, &weighted));
    CHECK(indeg == 0 && outdeg == 0 && weighted);
    OK(MPI_Comm_free(&dg));
    /* Dims_create is balanced: 72 in 2-D is 9 x 8. */
    int d72[2] = {0, 0};
    OK(MPI_Dims_create(72, 2, d72));
    CHECK(d72[0] == 9 && d72[1] == 8);

    /* Bad arguments. */
    int bad[2] = {size + 1, 1};
    MPI_Comm x;
    FAILS(MPI_ERR_ARG, MPI_Cart_create(MPI_COMM_WORLD, 2, bad, periods, 0, &x));
    int neg[2] = {-1, 1};
    FAILS(MPI_ERR_DIMS, MPI_Cart_create(MPI_COMM_WORLD, 2, neg, periods, 0, &x));
    FAILS(MPI_ERR_DIMS, MPI_Cart_create(MPI_COMM_WORLD, -1, dims, periods, 0, &x));
    FAILS(MPI_ERR_TOPOLOGY, MPI_Cartdim_get(MPI_COMM_WORLD, &nd));
    FAILS(MPI_ERR_TOPOLOGY, MPI_Cart_shift(MPI_COMM_WORLD, 0, 1, &src, &dst));
    FAILS(MPI_ERR_TOPOLOGY, MPI_Graphdims_get(cart, &nn, &nedges));
    FAILS(MPI_ERR_RANK, MPI_Cart_coords(cart, size, 2, gc));
    FAILS(MPI_ERR_ARG, MPI_Cart_shift(cart, 2, 1, &src, &dst));
    FAILS(MPI_ERR_COMM, MPI_Cart_create(MPI_COMM_NULL, 2, dims, periods, 0, &x));
    int badedge[1] = {size};
    int bidx[1] = {1};
    FAILS(MPI_ERR_RANK, MPI_Graph_create(MPI_COMM_WORLD, 1, bidx, badedge, 0, &x));
    int wts[1] = {1};
    FAILS(MPI_ERR_RANK, MPI_Dist_graph_create_adjacent(MPI_COMM_WORLD, 1, badedge, wts, 1, &to, wts, MPI_INFO_NULL, 0, &x));
    OK(MPI_Comm_free(&cart));
    report_ok("topo");
    OK(MPI_Finalize());
    return 0;
}
