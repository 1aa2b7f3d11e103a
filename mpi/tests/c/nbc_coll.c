/* Nonblocking collectives against a serial model: every I-collective, with
 * MPI_IN_PLACE and derived datatypes where allowed, several outstanding at
 * once on different communicators, mixed with point-to-point requests in
 * Waitall/Waitany/Testsome; bad arguments under MPI_ERRORS_RETURN. */
#include <string.h>
#include "check.h"

static int me, n;

/* The value rank r contributes at index i. */
static int val(int r, int i) { return 1000 * r + 7 * i + 1; }

/* Completes `reqs` by Testsome polling (progress inside MPI calls). */
static void poll_all(int k, MPI_Request *reqs) {
    int left = k, idx[16], out;
    MPI_Status st[16];
    while (left > 0) {
        OK(MPI_Testsome(k, reqs, &out, idx, st));
        if (out == MPI_UNDEFINED) break;
        for (int j = 0; j < out; j++) CHECK(reqs[idx[j]] == MPI_REQUEST_NULL);
        left -= out;
    }
    for (int j = 0; j < k; j++) CHECK(reqs[j] == MPI_REQUEST_NULL);
}

static void data_movement(MPI_Comm comm) {
    int r, s;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &s);
    enum { B = 5 };
    int root = s - 1;
    int mine[B], all[4 * B], bc[B], sc[B];
    int ag[4 * B], a2a_s[4 * B], a2a_r[4 * B];
    for (int i = 0; i < B; i++) mine[i] = val(r, i);
    for (int i = 0; i < B; i++) bc[i] = r == root ? val(99, i) : -1;
    for (int i = 0; i < s * B; i++) a2a_s[i] = val(r, i);
    int scsrc[4 * B];
    for (int i = 0; i < s * B; i++) scsrc[i] = r == root ? val(50, i) : -1;
    memset(all, 0, sizeof all);
    memset(ag, 0, sizeof ag);
    MPI_Request q[6];
    OK(MPI_Ibcast(bc, B, MPI_INT, root, comm, &q[0]));
    OK(MPI_Igather(mine, B, MPI_INT, all, B, MPI_INT, root, comm, &q[1]));
    OK(MPI_Iscatter(scsrc, B, MPI_INT, sc, B, MPI_INT, root, comm, &q[2]));
    OK(MPI_Iallgather(mine, B, MPI_INT, ag, B, MPI_INT, comm, &q[3]));
    OK(MPI_Ialltoall(a2a_s, B, MPI_INT, a2a_r, B, MPI_INT, comm, &q[4]));
    OK(MPI_Ibarrier(comm, &q[5]));
    OK(MPI_Waitall(6, q, MPI_STATUSES_IGNORE));
    for (int i = 0; i < B; i++) CHECK(bc[i] == val(99, i));
    if (r == root)
        for (int p = 0; p < s; p++)
            for (int i = 0; i < B; i++) CHECK(all[p * B + i] == val(p, i));
    for (int i = 0; i < B; i++) CHECK(sc[i] == val(50, r * B + i));
    for (int p = 0; p < s; p++)
        for (int i = 0; i < B; i++) {
            CHECK(ag[p * B + i] == val(p, i));
            CHECK(a2a_r[p * B + i] == val(p, r * B + i));
        }

    /* v-forms: rank p contributes p + 1 ints. */
    int counts[4], displs[4], tot = 0;
    for (int p = 0; p < s; p++) {
        counts[p] = p + 1;
        displs[p] = tot + p; /* a gap of p ints before each block */
        tot += p + 1 + p;
    }
    int gv[32], agv[32], sv[8], svsrc[32];
    for (int i = 0; i < 32; i++) gv[i] = agv[i] = -7;
    for (int i = 0; i < 32; i++) svsrc[i] = val(60, i);
    int a2c[4], a2d[4], a2rc[4], a2rd[4], a2s[16], a2r[16];
    for (int p = 0; p < s; p++) {
        a2c[p] = (r + p) % 2 + 1; /* rank r sends (r + p) % 2 + 1 to p */
        a2d[p] = 4 * p;
        a2rc[p] = (p + r) % 2 + 1;
        a2rd[p] = 4 * p;
        for (int i = 0; i < 4; i++) a2s[4 * p + i] = val(r, 10 * p + i);
    }
    MPI_Request v[5];
    OK(MPI_Igatherv(mine, r + 1, MPI_INT, gv, counts, displs, MPI_INT, 0, comm, &v[0]));
    OK(MPI_Iallgatherv(mine, r + 1, MPI_INT, agv, counts, displs, MPI_INT, comm, &v[1]));
    OK(MPI_Iscatterv(svsrc, counts, displs, MPI_INT, sv, r + 1, MPI_INT, root, comm, &v[2]));
    OK(MPI_Ialltoallv(a2s, a2c, a2d, MPI_INT, a2r, a2rc, a2rd, MPI_INT, comm, &v[3]));
    OK(MPI_Ibarrier(comm, &v[4]));
    poll_all(5, v);
    for (int p = 0; p < s; p++)
        for (int i = 0; i < counts[p]; i++) {
            if (r == 0) CHECK(gv[displs[p] + i] == val(p, i));
            CHECK(agv[displs[p] + i] == val(p, i));
        }
    for (int i = 0; i < r + 1; i++) CHECK(sv[i] == val(60, displs[r] + i));
    for (int p = 0; p < s; p++)
        for (int i = 0; i < a2rc[p]; i++) CHECK(a2r[4 * p + i] == val(p, 10 * r + i));
}

static void in_place(MPI_Comm comm) {
    int r, s;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &s);
    enum { B = 3 };
    int g[4 * B], ag[4 * B], a2a[4 * B], sc[4 * B];
    for (int p = 0; p < s; p++)
        for (int i = 0; i < B; i++) {
            g[p * B + i] = p == r ? val(r, i) : -1;
            ag[p * B + i] = p == r ? val(r, i) : -1;
            a2a[p * B + i] = val(r, 10 * p + i);
            sc[p * B + i] = val(70, p * B + i);
        }
    MPI_Request q[4];
    int root = 0;
    if (r == root)
        OK(MPI_Igather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, g, B, MPI_INT, root, comm, &q[0]));
    else
        OK(MPI_Igather(&g[r * B], B, MPI_INT, NULL, 0, MPI_DATATYPE_NULL, root, comm, &q[0]));
    OK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, ag, B, MPI_INT, comm, &q[1]));
    OK(MPI_Ialltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, a2a, B, MPI_INT, comm, &q[2]));
    int scr[B];
    if (r == root)
        OK(MPI_Iscatter(sc, B, MPI_INT, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, root, comm, &q[3]));
    else
        OK(MPI_Iscatter(NULL, 0, MPI_DATATYPE_NULL, scr, B, MPI_INT, root, comm, &q[3]));
    for (int k = 0; k < 4; k++) {
        int idx;
        OK(MPI_Waitany(4, q, &idx, MPI_STATUS_IGNORE));
        CHECK(idx >= 0 && idx < 4);
    }
    for (int p = 0; p < s; p++)
        for (int i = 0; i < B; i++) {
            if (r == root) CHECK(g[p * B + i] == val(p, i));
            CHECK(ag[p * B + i] == val(p, i));
            CHECK(a2a[p * B + i] == val(p, 10 * r + i));
        }
    if (r == root)
        for (int i = 0; i < s * B; i++) CHECK(sc[i] == val(70, i));
    else
        for (int i = 0; i < B; i++) CHECK(scr[i] == val(70, r * B + i));
}

static void reductions(MPI_Comm comm) {
    int r, s;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &s);
    enum { C = 6 };
    int x[4 * C], sum[4 * C], red[C], mx[C], ip[C], scan[C], exscan[C], rsb[C], rs[C];
    double dx[C], dsum[C];
    for (int i = 0; i < s * C; i++) x[i] = val(r, i);
    for (int i = 0; i < C; i++) {
        ip[i] = val(r, i);
        dx[i] = 0.5 * val(r, i);
        exscan[i] = -5;
    }
    int rcounts[4];
    for (int p = 0; p < s; p++) rcounts[p] = p % 2 + 1;
    MPI_Request q[9];
    OK(MPI_Iallreduce(x, sum, C, MPI_INT, MPI_SUM, comm, &q[0]));
    OK(MPI_Ireduce(x, red, C, MPI_INT, MPI_MIN, s / 2, comm, &q[1]));
    OK(MPI_Iallreduce(x, mx, C, MPI_INT, MPI_MAX, comm, &q[2]));
    OK(MPI_Iallreduce(MPI_IN_PLACE, ip, C, MPI_INT, MPI_SUM, comm, &q[3]));
    OK(MPI_Iscan(x, scan, C, MPI_INT, MPI_SUM, comm, &q[4]));
    OK(MPI_Iexscan(x, exscan, C, MPI_INT, MPI_SUM, comm, &q[5]));
    OK(MPI_Ireduce_scatter_block(x, rsb, 2, MPI_INT, MPI_SUM, comm, &q[6]));
    OK(MPI_Ireduce_scatter(x, rs, rcounts, MPI_INT, MPI_SUM, comm, &q[7]));
    OK(MPI_Iallreduce(dx, dsum, C, MPI_DOUBLE, MPI_SUM, comm, &q[8]));
    OK(MPI_Waitall(9, q, MPI_STATUSES_IGNORE));
    for (int i = 0; i < C; i++) {
        int t = 0, m = 0, pr = 1 << 30, sc = 0, ex = 0;
        for (int p = 0; p < s; p++) {
            t += val(p, i);
            if (val(p, i) < pr) pr = val(p, i);
            if (val(p, i) > m) m = val(p, i);
            if (p <= r) sc += val(p, i);
            if (p < r) ex += val(p, i);
        }
        CHECK(sum[i] == t);
        CHECK(ip[i] == t);
        CHECK(mx[i] == m);
        CHECK(scan[i] == sc);
        if (r > 0) CHECK(exscan[i] == ex);
        if (r == s / 2) CHECK(red[i] == pr);
        CHECK(dsum[i] == 0.5 * t);
    }
    for (int i = 0; i < 2; i++) {
        int t = 0;
        for (int p = 0; p < s; p++) t += val(p, 2 * r + i);
        CHECK(rsb[i] == t);
    }
    int off = 0;
    for (int p = 0; p < r; p++) off += rcounts[p];
    for (int i = 0; i < rcounts[r]; i++) {
        int t = 0;
        for (int p = 0; p < s; p++) t += val(p, off + i);
        CHECK(rs[i] == t);
    }

    /* In place: reduce at the root, scan, reduce_scatter_block. */
    int a[C], b[C], c[4 * C];
    for (int i = 0; i < C; i++) a[i] = b[i] = val(r, i);
    for (int i = 0; i < s * C; i++) c[i] = val(r, i);
    MPI_Request w[3];
    if (r == 0)
        OK(MPI_Ireduce(MPI_IN_PLACE, a, C, MPI_INT, MPI_SUM, 0, comm, &w[0]));
    else
        OK(MPI_Ireduce(a, NULL, C, MPI_INT, MPI_SUM, 0, comm, &w[0]));
    OK(MPI_Iscan(MPI_IN_PLACE, b, C, MPI_INT, MPI_SUM, comm, &w[1]));
    OK(MPI_Ireduce_scatter_block(MPI_IN_PLACE, c, C, MPI_INT, MPI_SUM, comm, &w[2]));
    for (int k = 2; k >= 0; k--) OK(MPI_Wait(&w[k], MPI_STATUS_IGNORE));
    for (int i = 0; i < C; i++) {
        int t = 0, sc = 0, rsi = 0;
        for (int p = 0; p < s; p++) {
            t += val(p, i);
            if (p <= r) sc += val(p, i);
            rsi += val(p, r * C + i);
        }
        if (r == 0) CHECK(a[i] == t);
        CHECK(b[i] == sc);
        CHECK(c[i] == rsi);
    }

    /* A misaligned buffer of doubles goes through an aligned copy. */
    char raw[8 * C + 1], out[8 * C + 1];
    double d[C];
    for (int i = 0; i < C; i++) d[i] = r + i;
    memcpy(raw + 1, d, sizeof d);
    MPI_Request m;
    OK(MPI_Iallreduce(raw + 1, out + 1, C, MPI_DOUBLE, MPI_SUM, comm, &m));
    OK(MPI_Wait(&m, MPI_STATUS_IGNORE));
    memcpy(d, out + 1, sizeof d);
    for (int i = 0; i < C; i++) CHECK(d[i] == s * (s - 1) / 2.0 + s * i);
}

/* Derived datatypes: a vector (every other int) in bcast, gather, allgatherv. */
static void derived(MPI_Comm comm) {
    int r, s;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &s);
    MPI_Datatype vec;
    OK(MPI_Type_vector(3, 1, 2, MPI_INT, &vec));
    OK(MPI_Type_commit(&vec));
    int b[6], mine[6], g[24], counts[4], displs[4];
    for (int i = 0; i < 6; i++) {
        b[i] = r == 0 ? val(8, i) : -1;
        mine[i] = val(r, i);
    }
    for (int i = 0; i < 24; i++) g[i] = -1;
    for (int p = 0; p < s; p++) {
        counts[p] = 1;
        displs[p] = p; /* in extents of vec (5 ints) */
    }
    MPI_Request q[3];
    OK(MPI_Ibcast(b, 1, vec, 0, comm, &q[0]));
    OK(MPI_Iallgatherv(mine, 3, MPI_INT, g, counts, displs, vec, comm, &q[1]));
    int got[3] = {-1, -1, -1};
    int mv[6] = {-1, -1, -1, -1, -1, -1};
    if (r == 0) {
        for (int i = 0; i < 6; i++) mv[i] = val(9, i);
        OK(MPI_Isend(mv, 1, vec, 0, 5, MPI_COMM_SELF, &q[2]));
        OK(MPI_Recv(got, 3, MPI_INT, 0, 5, MPI_COMM_SELF, MPI_STATUS_IGNORE));
    } else {
        q[2] = MPI_REQUEST_NULL;
    }
    OK(MPI_Waitall(3, q, MPI_STATUSES_IGNORE));
    for (int i = 0; i < 6; i++) CHECK(b[i] == (r == 0 || i % 2 == 0 ? val(8, i) : -1));
    for (int p = 0; p < s; p++)
        for (int i = 0; i < 3; i++) CHECK(g[5 * p + 2 * i] == val(p, i));
    if (r == 0)
        for (int i = 0; i < 3; i++) CHECK(got[i] == val(9, 2 * i));
    OK(MPI_Type_free(&vec));
}

/* Nonblocking collectives on two communicators at once, with p2p in between. */
static void overlapped(void) {
    MPI_Comm dup, half;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    OK(MPI_Comm_split(MPI_COMM_WORLD, me % 2, me, &half));
    int hr, hs;
    MPI_Comm_rank(half, &hr);
    MPI_Comm_size(half, &hs);
    int a = me + 1, b = me + 1, c = 10 * (me + 1), sa = 0, sb = 0, sc = 0;
    int token = -1, mytok = me * 3;
    MPI_Request q[6];
    OK(MPI_Iallreduce(&a, &sa, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q[0]));
    OK(MPI_Iallreduce(&b, &sb, 1, MPI_INT, MPI_SUM, dup, &q[1]));
    OK(MPI_Iallreduce(&c, &sc, 1, MPI_INT, MPI_SUM, half, &q[2]));
    OK(MPI_Irecv(&token, 1, MPI_INT, (me + n - 1) % n, 3, MPI_COMM_WORLD, &q[3]));
    OK(MPI_Isend(&mytok, 1, MPI_INT, (me + 1) % n, 3, MPI_COMM_WORLD, &q[4]));
    OK(MPI_Ibarrier(dup, &q[5]));
    MPI_Status st[6];
    OK(MPI_Waitall(6, q, st));
    CHECK(sa == n * (n + 1) / 2);
    CHECK(sb == n * (n + 1) / 2);
    int want = 0;
    for (int p = me % 2; p < n; p += 2) want += 10 * (p + 1);
    CHECK(sc == want);
    CHECK(token == ((me + n - 1) % n) * 3);
    CHECK(st[3].MPI_SOURCE == (me + n - 1) % n && st[3].MPI_TAG == 3);
    CHECK(st[0].MPI_ERROR == MPI_SUCCESS);
    /* Many outstanding on one communicator, completed in reverse order. */
    enum { K = 12 };
    int in[K], res[K];
    MPI_Request many[K];
    for (int k = 0; k < K; k++) {
        in[k] = me + k;
        OK(MPI_Iallreduce(&in[k], &res[k], 1, MPI_INT, MPI_MAX, dup, &many[k]));
    }
    for (int k = K - 1; k >= 0; k--) {
        int flag = 0;
        while (!flag) OK(MPI_Test(&many[k], &flag, MPI_STATUS_IGNORE));
        CHECK(res[k] == n - 1 + k);
    }
    OK(MPI_Comm_free(&half));
    OK(MPI_Comm_free(&dup));
}

/* Alltoallw and Ialltoallw: a datatype and a byte displacement per block;
 * Reduce_local. */
static void alltoallw(MPI_Comm comm) {
    int r, s;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &s);
    MPI_Datatype vec;
    OK(MPI_Type_vector(2, 1, 2, MPI_INT, &vec)); /* 2 ints, extent 3 */
    OK(MPI_Type_commit(&vec));
    int sb[8], rb[12], ib[12], nb[12];
    int sc[4], sd[4], rc[4], rd[4];
    MPI_Datatype st[4], rt[4];
    for (int p = 0; p < s; p++) {
        sc[p] = 2, sd[p] = 8 * p, st[p] = MPI_INT;
        rc[p] = 1, rd[p] = 12 * p, rt[p] = vec;
        sb[2 * p] = val(r, 10 * p);
        sb[2 * p + 1] = val(r, 10 * p + 1);
        for (int i = 0; i < 3; i++) rb[3 * p + i] = nb[3 * p + i] = ib[3 * p + i] = -1;
        ib[3 * p] = val(r, 10 * p);
        ib[3 * p + 2] = val(r, 10 * p + 1);
    }
    OK(MPI_Alltoallw(sb, sc, sd, st, rb, rc, rd, rt, comm));
    MPI_Request q[2];
    OK(MPI_Ialltoallw(sb, sc, sd, st, nb, rc, rd, rt, comm, &q[0]));
    OK(MPI_Ialltoallw(MPI_IN_PLACE, NULL, NULL, NULL, ib, rc, rd, rt, comm, &q[1]));
    OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
    for (int p = 0; p < s; p++) {
        int *bufs[3] = {rb, nb, ib};
        for (int k = 0; k < 3; k++) {
            CHECK(bufs[k][3 * p] == val(p, 10 * r));
            CHECK(bufs[k][3 * p + 1] == -1);
            CHECK(bufs[k][3 * p + 2] == val(p, 10 * r + 1));
        }
    }
    OK(MPI_Type_free(&vec));

    int in[3] = {1, 2, 3}, io[3] = {10, 20, 30};
    OK(MPI_Reduce_local(in, io, 3, MPI_INT, MPI_SUM));
    CHECK(io[0] == 11 && io[1] == 22 && io[2] == 33);
    double din[2] = {5, -1}, dio[2] = {2, 3};
    OK(MPI_Reduce_local(din, dio, 2, MPI_DOUBLE, MPI_MAX));
    CHECK(dio[0] == 5 && dio[1] == 3);
}

/* A user operation that calls MPI (as generic ones do: MPI_Type_size,
 * MPI_Comm_rank) runs inside the progress of MPI_Test and friends: the
 * library must not hold its own state then. */
static void add_calling_mpi(void *in, void *io, int *len, MPI_Datatype *dt) {
    int sz, rk;
    CHECK(MPI_Type_size(*dt, &sz) == MPI_SUCCESS && sz == 4);
    CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rk) == MPI_SUCCESS && rk == me);
    for (int i = 0; i < *len; i++) ((int *)io)[i] += ((int *)in)[i];
}

static void user_op_calling_mpi(void) {
    MPI_Op op;
    OK(MPI_Op_create(add_calling_mpi, 1, &op));
    int x = me + 1, y, flag, idx, out, ind[1];
    MPI_Request r;
    for (int form = 0; form < 4; form++) {
        y = 0;
        OK(MPI_Iallreduce(&x, &y, 1, MPI_INT, op, MPI_COMM_WORLD, &r));
        switch (form) {
        case 0:
            flag = 0;
            while (!flag) OK(MPI_Test(&r, &flag, MPI_STATUS_IGNORE));
            break;
        case 1: OK(MPI_Waitany(1, &r, &idx, MPI_STATUS_IGNORE)); break;
        case 2:
            flag = 0;
            while (!flag) OK(MPI_Testall(1, &r, &flag, MPI_STATUSES_IGNORE));
            break;
        default: OK(MPI_Waitsome(1, &r, &out, ind, MPI_STATUSES_IGNORE)); break;
        }
        CHECK(y == n * (n + 1) / 2);
    }
    OK(MPI_Op_free(&op));
}

static void bad_arguments(void) {
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int x = 1, y;
    MPI_Request q = MPI_REQUEST_NULL;
    FAILS(MPI_ERR_ROOT, MPI_Ibcast(&x, 1, MPI_INT, n, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_ROOT, MPI_Ireduce(&x, &y, 1, MPI_INT, MPI_SUM, -1, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_COMM, MPI_Ibarrier(MPI_COMM_NULL, &q));
    FAILS(MPI_ERR_COMM, MPI_Iallreduce(&x, &y, 1, MPI_INT, MPI_SUM, (MPI_Comm)0x12345, &q));
    FAILS(MPI_ERR_ARG, MPI_Ibarrier(MPI_COMM_WORLD, NULL));
    FAILS(MPI_ERR_COUNT, MPI_Iallreduce(&x, &y, -1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_TYPE, MPI_Iallreduce(&x, &y, 1, MPI_DATATYPE_NULL, MPI_SUM, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_OP, MPI_Iallreduce(&x, &y, 1, MPI_INT, MPI_OP_NULL, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_OP, MPI_Iallreduce(&x, &y, 1, MPI_DOUBLE, MPI_BAND, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_BUFFER, MPI_Iallreduce(NULL, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_BUFFER, MPI_Ibcast(NULL, 2, MPI_INT, 0, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_TYPE, MPI_Iallgather(&x, 1, MPI_DATATYPE_NULL, &y, 1, MPI_INT, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_ARG, MPI_Iallgatherv(&x, 1, MPI_INT, &y, NULL, NULL, MPI_INT, MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_OP, MPI_Reduce_local(&x, &y, 1, MPI_DOUBLE, MPI_BAND));
    FAILS(MPI_ERR_BUFFER, MPI_Reduce_local(NULL, &y, 1, MPI_INT, MPI_SUM));
    CHECK(q == MPI_REQUEST_NULL);
    /* Freeing a nonblocking collective's request is erroneous: refused. */
    OK(MPI_Ibarrier(MPI_COMM_WORLD, &q));
    FAILS(MPI_ERR_REQUEST, MPI_Request_free(&q));
    CHECK(q != MPI_REQUEST_NULL);
    OK(MPI_Wait(&q, MPI_STATUS_IGNORE));
    CHECK(q == MPI_REQUEST_NULL);
    /* Mismatched block sizes (a program error) are reported, not a crash. */
    int big[8] = {0};
    FAILS(MPI_ERR_TRUNCATE, MPI_Iallgather(big, 2, MPI_INT, big, 1, MPI_INT, MPI_COMM_WORLD, &q));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    data_movement(MPI_COMM_WORLD);
    in_place(MPI_COMM_WORLD);
    reductions(MPI_COMM_WORLD);
    derived(MPI_COMM_WORLD);
    MPI_Comm rev;
    OK(MPI_Comm_split(MPI_COMM_WORLD, 0, n - me, &rev)); /* ranks reversed */
    data_movement(rev);
    reductions(rev);
    OK(MPI_Comm_free(&rev));
    alltoallw(MPI_COMM_WORLD);
    user_op_calling_mpi();
    overlapped();
    bad_arguments();
    OK(MPI_Barrier(MPI_COMM_WORLD));
    report_ok("nbc_coll");
    OK(MPI_Finalize());
    return 0;
}
