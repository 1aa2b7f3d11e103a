/* The large-count (MPI_Count) collectives of MPI-4: every blocking _c form,
 * nonblocking and persistent _c forms, neighbourhood _c forms and the
 * persistent neighbourhood collectives, MPI_Op_create_c (its function gets
 * an MPI_Count length), the error classes of counts that do not fit
 * (negative, or beyond INT_MAX where a path takes int counts: an
 * intercommunicator), and, when the machine has
 * the memory, an MPI_Bcast_c of more than 2^31 bytes. */
#include <stdint.h>
#include <string.h>
#include "check.h"

static MPI_Count seen_len = -1;

/* inout[i] += in[i] on ints, with an MPI_Count length. */
static void count_sum(void *in, void *inout, MPI_Count *len, MPI_Datatype *dt) {
    CHECK(*dt == MPI_INT);
    seen_len = *len;
    const int *a = in;
    int *b = inout;
    for (MPI_Count i = 0; i < *len; i++) b[i] += a[i];
}

static void int_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    for (int i = 0; i < *len; i++) ((int *)inout)[i] += ((int *)in)[i];
}

/* MemAvailable of /proc/meminfo in bytes (0 if unknown). */
static double mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    int me, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_Comm w = MPI_COMM_WORLD;
    enum { B = 3, MAXN = 8 };
    CHECK(n <= MAXN);
    int s[B * MAXN], r[B * MAXN], x[B], y[B];
    MPI_Count cnt[MAXN], cnt2[MAXN];
    MPI_Aint dsp[MAXN], dsp2[MAXN];

    /* Bcast_c */
    for (int i = 0; i < B; i++) x[i] = me == n - 1 ? 7 + i : -1;
    OK(MPI_Bcast_c(x, (MPI_Count)B, MPI_INT, n - 1, w));
    for (int i = 0; i < B; i++) CHECK(x[i] == 7 + i);

    /* Gather_c, Allgather_c, Scatter_c */
    for (int i = 0; i < B; i++) x[i] = 100 * me + i;
    memset(r, 0xff, sizeof r);
    OK(MPI_Gather_c(x, B, MPI_INT, r, B, MPI_INT, 0, w));
    if (me == 0)
        for (int p = 0; p < n; p++)
            for (int i = 0; i < B; i++) CHECK(r[B * p + i] == 100 * p + i);
    memset(r, 0xff, sizeof r);
    OK(MPI_Allgather_c(x, B, MPI_INT, r, B, MPI_INT, w));
    for (int p = 0; p < n; p++)
        for (int i = 0; i < B; i++) CHECK(r[B * p + i] == 100 * p + i);
    for (int i = 0; i < B * n; i++) s[i] = 5 * i;
    OK(MPI_Scatter_c(s, B, MPI_INT, y, B, MPI_INT, 0, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == 5 * (B * me + i));

    /* v-forms with MPI_Count counts and MPI_Aint displacements: rank p's
     * block of p + 1 ints, blocks placed in reverse rank order. */
    MPI_Aint at = 0;
    for (int p = n - 1; p >= 0; p--) cnt[p] = p + 1, dsp[p] = at, at += p + 1;
    int mine[MAXN];
    for (int i = 0; i <= me; i++) mine[i] = 10 * me + i;
    memset(r, 0xff, sizeof r);
    OK(MPI_Gatherv_c(mine, me + 1, MPI_INT, r, cnt, dsp, MPI_INT, n - 1, w));
    if (me == n - 1)
        for (int p = 0; p < n; p++)
            for (int i = 0; i <= p; i++) CHECK(r[dsp[p] + i] == 10 * p + i);
    memset(r, 0xff, sizeof r);
    OK(MPI_Allgatherv_c(mine, me + 1, MPI_INT, r, cnt, dsp, MPI_INT, w));
    for (int p = 0; p < n; p++)
        for (int i = 0; i <= p; i++) CHECK(r[dsp[p] + i] == 10 * p + i);
    for (int i = 0; i < at; i++) s[i] = 3 * i;
    int got[MAXN];
    OK(MPI_Scatterv_c(s, cnt, dsp, MPI_INT, got, me + 1, MPI_INT, 0, w));
    for (int i = 0; i <= me; i++) CHECK(got[i] == 3 * (dsp[me] + i));

    /* Alltoall_c, Alltoallv_c, Alltoallw_c */
    for (int p = 0; p < n; p++) s[p] = 1000 * me + p;
    OK(MPI_Alltoall_c(s, 1, MPI_INT, r, 1, MPI_INT, w));
    for (int p = 0; p < n; p++) CHECK(r[p] == 1000 * p + me);
    for (int p = 0; p < n; p++) {
        cnt[p] = 1, dsp[p] = n - 1 - p;  /* send reversed */
        cnt2[p] = 1, dsp2[p] = p;
    }
    for (int p = 0; p < n; p++) s[n - 1 - p] = 1000 * me + p;
    memset(r, 0xff, sizeof r);
    OK(MPI_Alltoallv_c(s, cnt, dsp, MPI_INT, r, cnt2, dsp2, MPI_INT, w));
    for (int p = 0; p < n; p++) CHECK(r[p] == 1000 * p + me);
    MPI_Datatype ts[MAXN];
    for (int p = 0; p < n; p++) ts[p] = MPI_INT, dsp[p] = (MPI_Aint)(p * sizeof(int)), dsp2[p] = dsp[p];
    for (int p = 0; p < n; p++) s[p] = 77 * me + p;
    memset(r, 0xff, sizeof r);
    OK(MPI_Alltoallw_c(s, cnt2, dsp, ts, r, cnt2, dsp2, ts, w));
    for (int p = 0; p < n; p++) CHECK(r[p] == 77 * p + me);

    /* Alltoallw_c from and to MPI_BOTTOM: the displacements are addresses,
     * beyond INT_MAX on 64-bit Linux (the int form cannot say them). */
    int wsend[MAXN], wrecv[MAXN];
    MPI_Aint big_seen = 0;
    for (int p = 0; p < n; p++) {
        wsend[p] = 31 * me + p;
        wrecv[p] = -1;
        OK(MPI_Get_address(&wsend[p], &dsp[p]));
        OK(MPI_Get_address(&wrecv[p], &dsp2[p]));
        if (dsp[p] > INT32_MAX) big_seen = 1;
        cnt2[p] = 1, ts[p] = MPI_INT;
    }
    OK(MPI_Alltoallw_c(MPI_BOTTOM, cnt2, dsp, ts, MPI_BOTTOM, cnt2, dsp2, ts, w));
    for (int p = 0; p < n; p++) CHECK(wrecv[p] == 31 * p + me);
    if (me == 0 && big_seen) printf("large: alltoallw_c with displacements beyond INT_MAX\n");

    /* Reductions */
    for (int i = 0; i < B; i++) x[i] = me + i;
    OK(MPI_Allreduce_c(x, y, B, MPI_INT, MPI_SUM, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == n * (n - 1) / 2 + n * i);
    memset(y, 0xff, sizeof y);
    OK(MPI_Reduce_c(x, y, B, MPI_INT, MPI_MAX, 0, w));
    if (me == 0)
        for (int i = 0; i < B; i++) CHECK(y[i] == n - 1 + i);
    OK(MPI_Scan_c(x, y, B, MPI_INT, MPI_SUM, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == me * (me + 1) / 2 + (me + 1) * i);
    OK(MPI_Exscan_c(x, y, B, MPI_INT, MPI_SUM, w));
    if (me > 0)
        for (int i = 0; i < B; i++) CHECK(y[i] == me * (me - 1) / 2 + me * i);
    for (int i = 0; i < B * n; i++) s[i] = i + me;
    OK(MPI_Reduce_scatter_block_c(s, y, B, MPI_INT, MPI_SUM, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == n * (B * me + i) + n * (n - 1) / 2);
    for (int p = 0; p < n; p++) cnt[p] = B;
    OK(MPI_Reduce_scatter_c(s, y, cnt, MPI_INT, MPI_SUM, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == n * (B * me + i) + n * (n - 1) / 2);
    for (int i = 0; i < B; i++) x[i] = i, y[i] = 10;
    OK(MPI_Reduce_local_c(x, y, B, MPI_INT, MPI_SUM));
    for (int i = 0; i < B; i++) CHECK(y[i] == 10 + i);

    /* MPI_Op_create_c: the function is called with an MPI_Count length. */
    MPI_Op op;
    OK(MPI_Op_create_c(count_sum, 1, &op));
    for (int i = 0; i < B; i++) x[i] = i, y[i] = 1;
    seen_len = -1;
    OK(MPI_Reduce_local_c(x, y, B, MPI_INT, op));
    CHECK(seen_len == B);
    for (int i = 0; i < B; i++) CHECK(y[i] == i + 1);
    for (int i = 0; i < B; i++) x[i] = me + i;
    seen_len = -1;
    OK(MPI_Allreduce_c(x, y, B, MPI_INT, op, w));
    CHECK(n == 1 || seen_len > 0);
    for (int i = 0; i < B; i++) CHECK(y[i] == n * (n - 1) / 2 + n * i);
    /* The int form still works through the same path. */
    OK(MPI_Op_free(&op));
    CHECK(op == MPI_OP_NULL);
    OK(MPI_Op_create(int_sum, 1, &op));
    for (int i = 0; i < B; i++) x[i] = me;
    OK(MPI_Allreduce_c(x, y, B, MPI_INT, op, w));
    for (int i = 0; i < B; i++) CHECK(y[i] == n * (n - 1) / 2);

    /* Nonblocking _c */
    MPI_Request q[4];
    for (int i = 0; i < B; i++) x[i] = me == 0 ? 40 + i : 0;
    OK(MPI_Ibcast_c(x, B, MPI_INT, 0, w, &q[0]));
    int z[B];
    for (int i = 0; i < B; i++) z[i] = me;
    OK(MPI_Iallreduce_c(z, y, B, MPI_INT, MPI_SUM, w, &q[1]));
    for (int p = 0; p < n; p++) cnt[p] = 1, dsp[p] = p, cnt2[p] = 1, dsp2[p] = n - 1 - p, s[p] = 10 * me + p;
    OK(MPI_Ialltoallv_c(s, cnt, dsp, MPI_INT, r, cnt2, dsp2, MPI_INT, w, &q[2]));
    OK(MPI_Iscan_c(z, got, B, MPI_INT, MPI_SUM, w, &q[3]));
    OK(MPI_Waitall(4, q, MPI_STATUSES_IGNORE));
    for (int i = 0; i < B; i++) CHECK(x[i] == 40 + i && y[i] == n * (n - 1) / 2);
    for (int p = 0; p < n; p++) CHECK(r[n - 1 - p] == 10 * p + me);
    for (int i = 0; i < B; i++) CHECK(got[i] == me * (me + 1) / 2);

    /* Persistent _c, started twice */
    MPI_Request pq[2];
    OK(MPI_Allreduce_init_c(z, y, B, MPI_INT, MPI_SUM, w, MPI_INFO_NULL, &pq[0]));
    OK(MPI_Allgatherv_init_c(mine, me + 1, MPI_INT, r, cnt, dsp, MPI_INT, w, MPI_INFO_NULL, &pq[1]));
    at = 0;
    for (int p = 0; p < n; p++) cnt[p] = p + 1, dsp[p] = at, at += p + 1;
    for (int it = 0; it < 2; it++) {
        for (int i = 0; i < B; i++) z[i] = me + it;
        OK(MPI_Startall(2, pq));
        OK(MPI_Waitall(2, pq, MPI_STATUSES_IGNORE));
        for (int i = 0; i < B; i++) CHECK(y[i] == n * (n - 1) / 2 + n * it);
        for (int p = 0; p < n; p++)
            for (int i = 0; i <= p; i++) CHECK(r[dsp[p] + i] == 10 * p + i);
    }
    OK(MPI_Request_free(&pq[0]));
    OK(MPI_Request_free(&pq[1]));

    /* Neighbourhood _c and persistent neighbourhood forms on a periodic
     * ring: slot 0 from the rank at -1, slot 1 from the rank at +1. */
    MPI_Comm ring;
    int dims[1] = {n}, per[1] = {1};
    OK(MPI_Cart_create(w, 1, dims, per, 0, &ring));
    int sb[2] = {10 * me, 10 * me + 1}, rb[2] = {-1, -1};
    int left = (me + n - 1) % n, right = (me + 1) % n;
    OK(MPI_Neighbor_alltoall_c(sb, 1, MPI_INT, rb, 1, MPI_INT, ring));
    CHECK(rb[0] == 10 * left + 1 && rb[1] == 10 * right);
    MPI_Request nq;
    int v = me;
    OK(MPI_Neighbor_allgather_init(&v, 1, MPI_INT, rb, 1, MPI_INT, ring, MPI_INFO_NULL, &nq));
    for (int it = 0; it < 2; it++) {
        v = me + 100 * it;
        OK(MPI_Start(&nq));
        OK(MPI_Wait(&nq, MPI_STATUS_IGNORE));
        CHECK(rb[0] == left + 100 * it && rb[1] == right + 100 * it);
    }
    OK(MPI_Request_free(&nq));
    MPI_Count nc[2] = {1, 1};
    MPI_Aint nd[2] = {1, 0};
    OK(MPI_Neighbor_alltoallv_init_c(sb, nc, nd, MPI_INT, rb, nc, nd, MPI_INT, ring, MPI_INFO_NULL, &nq));
    OK(MPI_Start(&nq));
    OK(MPI_Wait(&nq, MPI_STATUS_IGNORE));
    /* slot 0 sent sb[1] towards -1, received at rb[1] from -1 */
    CHECK(rb[1] == 10 * left + 0 && rb[0] == 10 * right + 1);
    OK(MPI_Request_free(&nq));
    OK(MPI_Comm_free(&ring));

    /* Counts that do not fit: typed errors, never truncation. */
    OK(MPI_Comm_set_errhandler(w, MPI_ERRORS_RETURN));
    FAILS(MPI_ERR_COUNT, MPI_Bcast_c(x, -1, MPI_INT, 0, w));
    FAILS(MPI_ERR_COUNT, MPI_Allreduce_c(x, y, -5, MPI_INT, MPI_SUM, w));
    cnt[0] = -1;
    FAILS(MPI_ERR_COUNT, MPI_Allgatherv_c(mine, 0, MPI_INT, r, cnt, dsp, MPI_INT, w));
    for (int p = 0; p < n; p++) cnt[p] = 0, dsp[p] = 0;
    dsp[0] = -3;
    FAILS(MPI_ERR_ARG, MPI_Alltoallv_c(s, cnt, dsp, MPI_INT, r, cnt, dsp, MPI_INT, w));
    OK(MPI_Op_free(&op));
    if (n >= 2) {
        /* Intercommunicator collectives take int counts. */
        MPI_Comm local, ic;
        int color = me % 2;
        OK(MPI_Comm_split(w, color, me, &local));
        OK(MPI_Intercomm_create(local, 0, w, color == 0 ? 1 : 0, 9, &ic));
        OK(MPI_Comm_set_errhandler(ic, MPI_ERRORS_RETURN));
        FAILS(MPI_ERR_COUNT, MPI_Bcast_c(x, (MPI_Count)1 << 33, MPI_INT, MPI_PROC_NULL, ic));
        /* ...and small ones work. */
        int lsz;
        MPI_Comm_size(local, &lsz);
        int lme;
        MPI_Comm_rank(local, &lme);
        int root = color == 0 ? (lme == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
        x[0] = color == 0 ? 555 : 0;
        OK(MPI_Bcast_c(x, 1, MPI_INT, root, ic));
        if (color == 1) CHECK(x[0] == 555);
        OK(MPI_Comm_free(&ic));
        OK(MPI_Comm_free(&local));
    }

    /* More than 2^31 elements in one call, if the machine has the memory
     * (2 ranks at most; 2 GiB + 16 bytes each). */
    int roomy = n <= 2 && mem_available() > 8e9;
    OK(MPI_Allreduce(MPI_IN_PLACE, &roomy, 1, MPI_INT, MPI_MIN, w));
    if (roomy) {
        MPI_Count big = ((MPI_Count)1 << 31) + 16;
        unsigned char *m = malloc((size_t)big);
        CHECK(m != NULL);
        if (me == 0)
            for (MPI_Count i = 0; i < big; i += 4096) m[i] = (unsigned char)(i >> 12);
        else
            memset(m, 0, (size_t)big);
        if (me == 0) m[big - 1] = 0xab;
        OK(MPI_Bcast_c(m, big, MPI_UNSIGNED_CHAR, 0, w));
        CHECK(m[big - 1] == 0xab);
        for (MPI_Count i = 0; i < big; i += 4096) CHECK(m[i] == (unsigned char)(i >> 12));
        free(m);
        if (me == 0) printf("large: bcast of %lld bytes\n", (long long)big);
    }
    report_ok("coll_large");
    OK(MPI_Finalize());
    return 0;
}
