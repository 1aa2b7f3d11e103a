/* The blocking collectives with every predefined operation family, the
 * v-forms, MPI_IN_PLACE, on MPI_COMM_WORLD and on a split communicator,
 * checked against serial results. */
#include <string.h>
#include "check.h"

static void run(MPI_Comm comm) {
    int rank, n;
    OK(MPI_Comm_rank(comm, &rank));
    OK(MPI_Comm_size(comm, &n));
    int root = n - 1;

    OK(MPI_Barrier(comm));

    /* Bcast from every root. */
    for (int r = 0; r < n; r++) {
        long v[3] = {rank == r ? 7L * r : -1, rank == r ? 8L : -1, rank == r ? 9L : -1};
        OK(MPI_Bcast(v, 3, MPI_LONG, r, comm));
        CHECK(v[0] == 7L * r && v[1] == 8 && v[2] == 9);
    }
    /* A large broadcast. */
    int big = 1 << 18;
    double *bd = malloc(big * sizeof(double));
    for (int i = 0; i < big; i++) bd[i] = rank == 0 ? i * 0.5 : -1;
    OK(MPI_Bcast(bd, big, MPI_DOUBLE, 0, comm));
    for (int i = 0; i < big; i += 1013) CHECK(bd[i] == i * 0.5);
    free(bd);

    /* Reduce and Allreduce: sum, prod, min, max, logical, bitwise. */
    int x = rank + 1, s = 0;
    OK(MPI_Reduce(&x, &s, 1, MPI_INT, MPI_SUM, root, comm));
    if (rank == root) CHECK(s == n * (n + 1) / 2);
    OK(MPI_Allreduce(&x, &s, 1, MPI_INT, MPI_SUM, comm));
    CHECK(s == n * (n + 1) / 2);
    double dx = rank + 1.0, dp = 0;
    OK(MPI_Allreduce(&dx, &dp, 1, MPI_DOUBLE, MPI_PROD, comm));
    double fact = 1;
    for (int i = 1; i <= n; i++) fact *= i;
    CHECK(dp == fact);
    float fmin = 0, fmax = 0, fv = 10.0f - rank;
    OK(MPI_Allreduce(&fv, &fmin, 1, MPI_FLOAT, MPI_MIN, comm));
    OK(MPI_Allreduce(&fv, &fmax, 1, MPI_FLOAT, MPI_MAX, comm));
    CHECK(fmin == 10.0f - (n - 1) && fmax == 10.0f);
    unsigned long long bits = 1ULL << rank, bor = 0, band = 0, bxor = 0;
    OK(MPI_Allreduce(&bits, &bor, 1, MPI_UNSIGNED_LONG_LONG, MPI_BOR, comm));
    OK(MPI_Allreduce(&bits, &band, 1, MPI_UNSIGNED_LONG_LONG, MPI_BAND, comm));
    OK(MPI_Allreduce(&bits, &bxor, 1, MPI_UNSIGNED_LONG_LONG, MPI_BXOR, comm));
    CHECK(bor == (1ULL << n) - 1 && band == (n == 1 ? 1ULL : 0ULL) && bxor == bor);
    unsigned char byte = (unsigned char)(0xF0 | rank), bb = 0;
    OK(MPI_Allreduce(&byte, &bb, 1, MPI_BYTE, MPI_BAND, comm));
    CHECK((bb & 0xF0) == 0xF0);
    _Bool t = rank == 0, land = 1, lor = 0, lxor = 0;
    OK(MPI_Allreduce(&t, &land, 1, MPI_C_BOOL, MPI_LAND, comm));
    OK(MPI_Allreduce(&t, &lor, 1, MPI_C_BOOL, MPI_LOR, comm));
    OK(MPI_Allreduce(&t, &lxor, 1, MPI_C_BOOL, MPI_LXOR, comm));
    CHECK(land == (n == 1) && lor == 1 && lxor == 1);
    int li = rank % 2, lout = -1;
    OK(MPI_Allreduce(&li, &lout, 1, MPI_INT, MPI_LOR, comm));
    CHECK(lout == (n > 1));
    /* Complex sums. */
    double cz[2] = {1.0, (double)rank}, czs[2];
    OK(MPI_Allreduce(cz, czs, 1, MPI_C_DOUBLE_COMPLEX, MPI_SUM, comm));
    CHECK(czs[0] == n && czs[1] == n * (n - 1) / 2);
    /* MINLOC/MAXLOC on pairs. */
    struct { double v; int i; } dv = {(double)((rank * 7) % n), rank}, dmin, dmax;
    OK(MPI_Allreduce(&dv, &dmin, 1, MPI_DOUBLE_INT, MPI_MINLOC, comm));
    OK(MPI_Allreduce(&dv, &dmax, 1, MPI_DOUBLE_INT, MPI_MAXLOC, comm));
    CHECK(dmin.v == 0 && dmin.i == 0);
    CHECK(dmax.v == n - 1);
    int pair[2] = {5, rank}, pmin[2];
    OK(MPI_Allreduce(pair, pmin, 1, MPI_2INT, MPI_MINLOC, comm));
    CHECK(pmin[0] == 5 && pmin[1] == 0); /* ties: the lowest index */
    /* A long vector (the algorithms for large messages). */
    int len = 100000;
    long long *lv = malloc(len * sizeof(long long)), *lr = malloc(len * sizeof(long long));
    for (int i = 0; i < len; i++) lv[i] = i + rank;
    OK(MPI_Allreduce(lv, lr, len, MPI_LONG_LONG, MPI_SUM, comm));
    for (int i = 0; i < len; i += 997) CHECK(lr[i] == (long long)n * i + n * (n - 1) / 2);
    /* In place. */
    OK(MPI_Allreduce(MPI_IN_PLACE, lv, len, MPI_LONG_LONG, MPI_SUM, comm));
    for (int i = 0; i < len; i += 997) CHECK(lv[i] == lr[i]);
    int ip = rank + 1;
    if (rank == root) {
        OK(MPI_Reduce(MPI_IN_PLACE, &ip, 1, MPI_INT, MPI_MAX, root, comm));
        CHECK(ip == n);
    } else {
        OK(MPI_Reduce(&ip, NULL, 1, MPI_INT, MPI_MAX, root, comm));
    }
    free(lv);
    free(lr);

    /* Gather, Scatter, Allgather, Alltoall and in-place forms. */
    int *all = malloc(n * 2 * sizeof(int)), mine[2] = {rank, rank * rank};
    OK(MPI_Gather(mine, 2, MPI_INT, all, 2, MPI_INT, root, comm));
    if (rank == root)
        for (int i = 0; i < n; i++) CHECK(all[2 * i] == i && all[2 * i + 1] == i * i);
    if (rank == root) {
        for (int i = 0; i < 2 * n; i++) all[i] = -1;
        all[2 * root] = root;
        all[2 * root + 1] = root * root;
        OK(MPI_Gather(MPI_IN_PLACE, 2, MPI_INT, all, 2, MPI_INT, root, comm));
        for (int i = 0; i < n; i++) CHECK(all[2 * i] == i && all[2 * i + 1] == i * i);
    } else {
        OK(MPI_Gather(mine, 2, MPI_INT, NULL, 0, MPI_INT, root, comm));
    }
    int got[2] = {-1, -1};
    if (rank == root)
        for (int i = 0; i < n; i++) all[2 * i] = 100 + i, all[2 * i + 1] = 200 + i;
    OK(MPI_Scatter(all, 2, MPI_INT, got, 2, MPI_INT, root, comm));
    CHECK(got[0] == 100 + rank && got[1] == 200 + rank);
    if (rank == root) {
        OK(MPI_Scatter(all, 2, MPI_INT, MPI_IN_PLACE, 2, MPI_INT, root, comm));
    } else {
        got[0] = got[1] = -1;
        OK(MPI_Scatter(NULL, 0, MPI_INT, got, 2, MPI_INT, root, comm));
        CHECK(got[0] == 100 + rank);
    }
    OK(MPI_Allgather(mine, 2, MPI_INT, all, 2, MPI_INT, comm));
    for (int i = 0; i < n; i++) CHECK(all[2 * i] == i && all[2 * i + 1] == i * i);
    for (int i = 0; i < 2 * n; i++) all[i] = (i / 2 == rank) ? mine[i % 2] : -1;
    OK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, 2, MPI_INT, comm));
    for (int i = 0; i < n; i++) CHECK(all[2 * i] == i && all[2 * i + 1] == i * i);
    int *a2a = malloc(n * sizeof(int)), *a2b = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) a2a[i] = rank * 100 + i;
    OK(MPI_Alltoall(a2a, 1, MPI_INT, a2b, 1, MPI_INT, comm));
    for (int i = 0; i < n; i++) CHECK(a2b[i] == i * 100 + rank);
    OK(MPI_Alltoall(MPI_IN_PLACE, 1, MPI_INT, a2a, 1, MPI_INT, comm));
    for (int i = 0; i < n; i++) CHECK(a2a[i] == i * 100 + rank);

    /* The v-forms: rank i contributes i + 1 elements. */
    int *counts = malloc(n * sizeof(int)), *displs = malloc(n * sizeof(int)), total = 0;
    for (int i = 0; i < n; i++) {
        counts[i] = i + 1;
        displs[i] = total + i; /* a gap of i before each block */
        total += i + 1;
    }
    int span = displs[n - 1] + counts[n - 1];
    short *vbuf = malloc(span * sizeof(short)), *vmine = malloc((rank + 1) * sizeof(short));
    for (int i = 0; i <= rank; i++) vmine[i] = (short)(rank * 10 + i);
    for (int i = 0; i < span; i++) vbuf[i] = -1;
    OK(MPI_Gatherv(vmine, rank + 1, MPI_SHORT, vbuf, counts, displs, MPI_SHORT, root, comm));
    if (rank == root)
        for (int r = 0; r < n; r++)
            for (int i = 0; i <= r; i++) CHECK(vbuf[displs[r] + i] == r * 10 + i);
    OK(MPI_Allgatherv(vmine, rank + 1, MPI_SHORT, vbuf, counts, displs, MPI_SHORT, comm));
    for (int r = 0; r < n; r++)
        for (int i = 0; i <= r; i++) CHECK(vbuf[displs[r] + i] == r * 10 + i);
    for (int i = 0; i <= rank; i++) vmine[i] = -1;
    OK(MPI_Scatterv(vbuf, counts, displs, MPI_SHORT, vmine, rank + 1, MPI_SHORT, root, comm));
    for (int i = 0; i <= rank; i++) CHECK(vmine[i] == rank * 10 + i);
    /* Alltoallv: rank r sends j + 1 elements to rank j. */
    int *sc = malloc(n * sizeof(int)), *sd = malloc(n * sizeof(int));
    int *rc = malloc(n * sizeof(int)), *rd = malloc(n * sizeof(int)), st = 0, rt = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = j + 1;
        sd[j] = st;
        st += j + 1;
        rc[j] = rank + 1;
        rd[j] = rt;
        rt += rank + 1;
    }
    int *sbuf = malloc(st * sizeof(int)), *rbuf = malloc(rt * sizeof(int));
    for (int j = 0; j < n; j++)
        for (int k = 0; k <= j; k++) sbuf[sd[j] + k] = rank * 1000 + j * 10 + k;
    OK(MPI_Alltoallv(sbuf, sc, sd, MPI_INT, rbuf, rc, rd, MPI_INT, comm));
    for (int j = 0; j < n; j++)
        for (int k = 0; k <= rank; k++) CHECK(rbuf[rd[j] + k] == j * 1000 + rank * 10 + k);

    /* Reduce_scatter(_block), Scan, Exscan. */
    int *rsin = malloc(total * sizeof(int)), rsout[64];
    for (int i = 0; i < total; i++) rsin[i] = i;
    OK(MPI_Reduce_scatter(rsin, rsout, counts, MPI_INT, MPI_SUM, comm));
    int off = rank * (rank + 1) / 2;
    for (int i = 0; i <= rank; i++) CHECK(rsout[i] == n * (off + i));
    OK(MPI_Reduce_scatter(MPI_IN_PLACE, rsin, counts, MPI_INT, MPI_SUM, comm));
    for (int i = 0; i <= rank; i++) CHECK(rsin[i] == n * (off + i));
    int *rb = malloc(2 * n * sizeof(int)), rbo[2];
    for (int i = 0; i < 2 * n; i++) rb[i] = i;
    OK(MPI_Reduce_scatter_block(rb, rbo, 2, MPI_INT, MPI_SUM, comm));
    CHECK(rbo[0] == n * 2 * rank && rbo[1] == n * (2 * rank + 1));
    OK(MPI_Reduce_scatter_block(MPI_IN_PLACE, rb, 2, MPI_INT, MPI_SUM, comm));
    CHECK(rb[0] == n * 2 * rank && rb[1] == n * (2 * rank + 1));
    int sv = rank + 1, so = 0;
    OK(MPI_Scan(&sv, &so, 1, MPI_INT, MPI_SUM, comm));
    CHECK(so == (rank + 1) * (rank + 2) / 2);
    OK(MPI_Scan(MPI_IN_PLACE, &sv, 1, MPI_INT, MPI_PROD, comm));
    int f = 1;
    for (int i = 1; i <= rank + 1; i++) f *= i;
    CHECK(sv == f);
    int ev = rank + 1, eo = -7;
    OK(MPI_Exscan(&ev, &eo, 1, MPI_INT, MPI_SUM, comm));
    if (rank > 0) CHECK(eo == rank * (rank + 1) / 2);
    OK(MPI_Exscan(MPI_IN_PLACE, &ev, 1, MPI_INT, MPI_MAX, comm));
    if (rank > 0) CHECK(ev == rank);

    free(all); free(a2a); free(a2b); free(counts); free(displs); free(vbuf); free(vmine);
    free(sc); free(sd); free(rc); free(rd); free(sbuf); free(rbuf); free(rsin); free(rb);
}

int main(int argc, char **argv) {
    int rank;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    run(MPI_COMM_WORLD);
    /* The same on the odd and even halves, ranked backwards. */
    MPI_Comm half;
    OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, -rank, &half));
    run(half);
    OK(MPI_Comm_free(&half));
    run(MPI_COMM_SELF);
    report_ok("coll");
    OK(MPI_Finalize());
    return 0;
}
