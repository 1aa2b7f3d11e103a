/* Nonblocking collectives that must not complete inside the call: rank 0
 * starts each only after receiving from every other rank, which sends
 * after starting it (this deadlocks if the call waits for the others):
 * MPI_Ineighbor_alltoall on a ring, the intercommunicator MPI_Ibcast,
 * MPI_Iallreduce and MPI_Ibarrier (then its MPI_Ireduce_scatter with
 * uneven blocks and MPI_Ireduce). Also the nonblocking reductions with a
 * user operation on a derived datatype (Ireduce, Iallreduce, Iscan,
 * Ireduce_scatter_block), against the sums they must give. */
#include "check.h"

/* Element-wise sum of pairs of ints (the type is 2 contiguous ints). */
static void pair_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    int *a = in, *b = inout, i;
    (void)dt;
    for (i = 0; i < 2 * *len; i++)
        b[i] += a[i];
}

/* Everyone but rank 0 sends to rank 0 (synchronously); rank 0 receives
 * from all. Called after the others started a collective, and before
 * rank 0 does. */
static void others_to_zero(MPI_Comm c) {
    int r, n, i, x = 0;
    OK(MPI_Comm_rank(c, &r));
    OK(MPI_Comm_size(c, &n));
    if (r == 0) {
        for (i = 1; i < n; i++)
            OK(MPI_Recv(&x, 1, MPI_INT, i, 9, c, MPI_STATUS_IGNORE));
    } else {
        OK(MPI_Ssend(&x, 1, MPI_INT, 0, 9, c));
    }
}

int main(int argc, char **argv) {
    int rank, size, i;
    MPI_Request req;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));

    /* 1. Ineighbor_alltoall on a periodic ring. */
    {
        MPI_Comm ring;
        int dims[1] = {size}, periods[1] = {1};
        int sbuf[2], rbuf[2] = {-1, -1};
        OK(MPI_Cart_create(MPI_COMM_WORLD, 1, dims, periods, 0, &ring));
        sbuf[0] = 100 + rank; /* to the -1 neighbour */
        sbuf[1] = 200 + rank; /* to the +1 neighbour */
        if (rank != 0)
            OK(MPI_Ineighbor_alltoall(sbuf, 1, MPI_INT, rbuf, 1, MPI_INT, ring, &req));
        others_to_zero(MPI_COMM_WORLD);
        if (rank == 0)
            OK(MPI_Ineighbor_alltoall(sbuf, 1, MPI_INT, rbuf, 1, MPI_INT, ring, &req));
        OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
        /* From -1: what it sent to its +1; from +1: what it sent to its -1. */
        CHECK(rbuf[0] == 200 + (rank + size - 1) % size);
        CHECK(rbuf[1] == 100 + (rank + 1) % size);
        OK(MPI_Comm_free(&ring));
    }

    /* 2. User operation on a derived type, nonblocking. */
    {
        MPI_Datatype pair;
        MPI_Op op;
        int s[4], r[4], k;
        MPI_Request q[4];
        int red[4] = {-1, -1, -1, -1}, all[4] = {-1, -1, -1, -1};
        int scan[4] = {-1, -1, -1, -1}, *blk = malloc(sizeof(int) * 2 * size);
        int *sv = malloc(sizeof(int) * 2 * size);
        OK(MPI_Type_contiguous(2, MPI_INT, &pair));
        OK(MPI_Type_commit(&pair));
        OK(MPI_Op_create(pair_sum, 1, &op));
        for (k = 0; k < 4; k++)
            s[k] = rank * 10 + k;
        for (k = 0; k < 2 * size; k++)
            sv[k] = rank + k;
        OK(MPI_Ireduce(s, red, 2, pair, op, 0, MPI_COMM_WORLD, &q[0]));
        OK(MPI_Iallreduce(s, all, 2, pair, op, MPI_COMM_WORLD, &q[1]));
        OK(MPI_Iscan(s, scan, 2, pair, op, MPI_COMM_WORLD, &q[2]));
        OK(MPI_Ireduce_scatter_block(sv, blk, 1, pair, op, MPI_COMM_WORLD, &q[3]));
        OK(MPI_Waitall(4, q, MPI_STATUSES_IGNORE));
        for (k = 0; k < 4; k++) {
            int tot = 10 * size * (size - 1) / 2 + size * k;
            int upto = 10 * rank * (rank + 1) / 2 + (rank + 1) * k;
            if (rank == 0)
                CHECK(red[k] == tot);
            CHECK(all[k] == tot);
            CHECK(scan[k] == upto);
        }
        for (k = 0; k < 2; k++)
            CHECK(blk[k] == size * (size - 1) / 2 + size * (2 * rank + k));
        (void)r;
        free(blk);
        free(sv);
        OK(MPI_Op_free(&op));
        OK(MPI_Type_free(&pair));
    }

    /* 3. Intercommunicator Ibcast, Iallreduce and Ibarrier between the even
     * and odd ranks; rank 0 starts each after hearing from all others. */
    if (size >= 2) {
        MPI_Comm local, ic;
        int lrank, rsize, v = -1, sum = -1, mine;
        MPI_Request q[3];
        OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &local));
        OK(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, rank == 0 ? 1 : 0, 78, &ic));
        OK(MPI_Comm_rank(ic, &lrank));
        OK(MPI_Comm_remote_size(ic, &rsize));
        mine = lrank + 1;
        if (rank != 0) {
            /* Rank 0 (even group, local rank 0) is the broadcast's root. */
            int root = rank % 2 == 0 ? (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
            if (rank % 2 == 0)
                v = 4242;
            OK(MPI_Ibcast(&v, 1, MPI_INT, root, ic, &q[0]));
            OK(MPI_Iallreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, ic, &q[1]));
            OK(MPI_Ibarrier(ic, &q[2]));
        }
        others_to_zero(MPI_COMM_WORLD);
        if (rank == 0) {
            v = 4242;
            OK(MPI_Ibcast(&v, 1, MPI_INT, MPI_ROOT, ic, &q[0]));
            OK(MPI_Iallreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, ic, &q[1]));
            OK(MPI_Ibarrier(ic, &q[2]));
        }
        OK(MPI_Waitall(3, q, MPI_STATUSES_IGNORE));
        CHECK(v == 4242);
        CHECK(sum == rsize * (rsize + 1) / 2);

        /* Ireduce_scatter with uneven blocks (local rank 0 takes all but
         * one element per other local process; both groups' vectors have
         * lsize * rsize elements) and Ireduce to the even group's rank 0. */
        {
            int lsize, T, k, before, rsum = 0, *cnt, *vec, *res, red = -1;
            OK(MPI_Comm_size(ic, &lsize));
            T = lsize * rsize;
            for (k = 0; k < size; k++)
                if (k % 2 != rank % 2)
                    rsum += k;
            cnt = malloc(sizeof(int) * lsize);
            vec = malloc(sizeof(int) * T);
            res = malloc(sizeof(int) * T);
            for (k = 0; k < lsize; k++)
                cnt[k] = k == 0 ? T - (lsize - 1) : 1;
            for (k = 0; k < T; k++)
                vec[k] = rank + k;
            before = lrank == 0 ? 0 : T - (lsize - 1) + (lrank - 1);
            OK(MPI_Ireduce_scatter(vec, res, cnt, MPI_INT, MPI_SUM, ic, &q[0]));
            {
                int root = rank % 2 == 0 ? (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
                OK(MPI_Ireduce(&rank, &red, 1, MPI_INT, MPI_SUM, root, ic, &q[1]));
            }
            OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
            for (k = 0; k < cnt[lrank]; k++)
                CHECK(res[k] == rsum + rsize * (before + k));
            if (rank == 0)
                CHECK(red == rsum);
            free(cnt);
            free(vec);
            free(res);
        }
        OK(MPI_Comm_free(&ic));
        OK(MPI_Comm_free(&local));
    }
    (void)i;
    report_ok("nbc_overlap");
    OK(MPI_Finalize());
    return 0;
}
