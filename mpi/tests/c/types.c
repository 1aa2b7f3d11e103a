/* Derived datatypes: each constructor sent and received between ranks
 * (a ring, checked element by element against hand-computed index lists),
 * pack/unpack round trips, extents and sizes, a struct of mixed types,
 * subarrays of 2-D and 3-D arrays, Get_count/Get_elements of partial
 * messages, and the error classes under MPI_ERRORS_RETURN. */
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include "check.h"

#define N 64

static int rank, size, next, prev;

static int val(int r, int i) { return 1000 * (r + 1) + i; }

/* Sends `count` of `dt` over an int array to the next rank while
 * receiving the same from the previous; checks that exactly the ints at
 * `idx` arrived, then the same with one side as plain MPI_INT (the
 * packed order must be `idx`'s order). */
static void ring(MPI_Datatype dt, int count, const int *idx, int nidx) {
    int sbuf[N], rbuf[N], flat[N];
    MPI_Status st;
    for (int i = 0; i < N; i++) sbuf[i] = val(rank, i), rbuf[i] = -1, flat[i] = -1;
    OK(MPI_Sendrecv(sbuf, count, dt, next, 1, rbuf, count, dt, prev, 1, MPI_COMM_WORLD, &st));
    int got = -2;
    OK(MPI_Get_count(&st, dt, &got));
    CHECK(got == count);
    OK(MPI_Get_elements(&st, dt, &got));
    CHECK(got == nidx);
    int touched[N] = {0};
    for (int k = 0; k < nidx; k++) {
        CHECK(rbuf[idx[k]] == val(prev, idx[k]));
        touched[idx[k]] = 1;
    }
    for (int i = 0; i < N; i++)
        if (!touched[i]) CHECK(rbuf[i] == -1);
    /* Derived on the send side, flat ints on the receive side: pack order. */
    OK(MPI_Sendrecv(sbuf, count, dt, next, 2, flat, nidx, MPI_INT, prev, 2, MPI_COMM_WORLD, &st));
    for (int k = 0; k < nidx; k++) CHECK(flat[k] == val(prev, idx[k]));
    /* Flat ints sent, derived received: unpack order. */
    for (int i = 0; i < N; i++) rbuf[i] = -1;
    OK(MPI_Sendrecv(flat, nidx, MPI_INT, next, 3, rbuf, count, dt, prev, 3, MPI_COMM_WORLD, &st));
    int pp = (prev + size - 1) % size; /* what prev received from its own prev */
    for (int k = 0; k < nidx; k++) CHECK(rbuf[idx[k]] == val(pp, idx[k]));
    /* Blocking Send/Recv on distinct ranks, when there are two. */
    if (size >= 2 && rank < 2) {
        for (int i = 0; i < N; i++) rbuf[i] = -1;
        if (rank == 0) {
            OK(MPI_Send(sbuf, count, dt, 1, 4, MPI_COMM_WORLD));
        } else {
            OK(MPI_Recv(rbuf, count, dt, 0, 4, MPI_COMM_WORLD, &st));
            for (int k = 0; k < nidx; k++) CHECK(rbuf[idx[k]] == val(0, idx[k]));
            int t2[N] = {0};
            for (int k = 0; k < nidx; k++) t2[idx[k]] = 1;
            for (int i = 0; i < N; i++)
                if (!t2[i]) CHECK(rbuf[i] == -1);
        }
    }
    /* Sendrecv_replace: the same positions replaced, the others kept. */
    {
        int x[N];
        for (int i = 0; i < N; i++) x[i] = val(rank, i);
        OK(MPI_Sendrecv_replace(x, count, dt, next, 6, prev, 6, MPI_COMM_WORLD, &st));
        int t3[N] = {0};
        for (int k = 0; k < nidx; k++) {
            CHECK(x[idx[k]] == val(prev, idx[k]));
            t3[idx[k]] = 1;
        }
        for (int i = 0; i < N; i++)
            if (!t3[i]) CHECK(x[i] == val(rank, i));
    }
    /* Nonblocking send of a packed copy. */
    MPI_Request rq;
    for (int i = 0; i < N; i++) rbuf[i] = -1;
    OK(MPI_Isend(sbuf, count, dt, next, 5, MPI_COMM_WORLD, &rq));
    OK(MPI_Recv(rbuf, count, dt, prev, 5, MPI_COMM_WORLD, &st));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    for (int k = 0; k < nidx; k++) CHECK(rbuf[idx[k]] == val(prev, idx[k]));
}

static void extent_is(MPI_Datatype t, MPI_Aint lb, MPI_Aint ext, int sz) {
    MPI_Aint l, e;
    int s;
    MPI_Count cl, ce, cs;
    OK(MPI_Type_get_extent(t, &l, &e));
    CHECK(l == lb && e == ext);
    OK(MPI_Type_get_extent_x(t, &cl, &ce));
    CHECK(cl == lb && ce == ext);
    OK(MPI_Type_size(t, &s));
    CHECK(s == sz);
    OK(MPI_Type_size_x(t, &cs));
    CHECK(cs == sz);
}

static MPI_Datatype commit(MPI_Datatype t) {
    OK(MPI_Type_commit(&t));
    return t;
}

struct mixed {
    int a;
    double b;
    char c[3];
};

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    next = (rank + 1) % size;
    prev = (rank + size - 1) % size;
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

    MPI_Datatype t, u;

    /* contiguous: dense, the zero-copy path. */
    OK(MPI_Type_contiguous(5, MPI_INT, &t));
    t = commit(t);
    extent_is(t, 0, 20, 20);
    { int idx[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; ring(t, 2, idx, 10); }
    OK(MPI_Type_free(&t));
    CHECK(t == MPI_DATATYPE_NULL);

    /* vector(3, 2, 4): ints 0 1, 4 5, 8 9. */
    OK(MPI_Type_vector(3, 2, 4, MPI_INT, &t));
    t = commit(t);
    extent_is(t, 0, 40, 24);
    { int idx[] = {0, 1, 4, 5, 8, 9}; ring(t, 1, idx, 6); }
    OK(MPI_Type_free(&t));

    /* vector(2, 1, 2): extent 3 ints, two of them: 0 2, 3 5. */
    OK(MPI_Type_vector(2, 1, 2, MPI_INT, &t));
    t = commit(t);
    extent_is(t, 0, 12, 8);
    { int idx[] = {0, 2, 3, 5}; ring(t, 2, idx, 4); }
    OK(MPI_Type_free(&t));

    /* hvector(3, 1, 12 bytes): 0 3 6. */
    OK(MPI_Type_create_hvector(3, 1, 12, MPI_INT, &t));
    t = commit(t);
    extent_is(t, 0, 28, 12);
    { int idx[] = {0, 3, 6}; ring(t, 1, idx, 3); }
    OK(MPI_Type_free(&t));

    /* indexed {2,1,3} at {5,0,10}: 5 6 0 10 11 12 (type-map order). */
    {
        int bl[] = {2, 1, 3}, dp[] = {5, 0, 10};
        OK(MPI_Type_indexed(3, bl, dp, MPI_INT, &t));
        t = commit(t);
        extent_is(t, 0, 52, 24);
        int idx[] = {5, 6, 0, 10, 11, 12};
        ring(t, 1, idx, 6);
        OK(MPI_Type_free(&t));
    }

    /* hindexed {1,2} at {8,40} bytes: 2 10 11; lb 8. */
    {
        int bl[] = {1, 2};
        MPI_Aint dp[] = {8, 40};
        OK(MPI_Type_create_hindexed(2, bl, dp, MPI_INT, &t));
        t = commit(t);
        extent_is(t, 8, 40, 12);
        MPI_Aint tl, te;
        OK(MPI_Type_get_true_extent(t, &tl, &te));
        CHECK(tl == 8 && te == 40);
        int idx[] = {2, 10, 11};
        ring(t, 1, idx, 3);
        OK(MPI_Type_free(&t));
    }

    /* indexed_block(3, 2, {7,1,20}): 7 8 1 2 20 21. */
    {
        int dp[] = {7, 1, 20};
        OK(MPI_Type_create_indexed_block(3, 2, dp, MPI_INT, &t));
        t = commit(t);
        extent_is(t, 4, 84, 24);
        int idx[] = {7, 8, 1, 2, 20, 21};
        ring(t, 1, idx, 6);
        OK(MPI_Type_free(&t));
    }

    /* resized(vector(2,1,3), 0, 20): two elements 5 ints apart: 0 3 5 8. */
    OK(MPI_Type_vector(2, 1, 3, MPI_INT, &u));
    extent_is(u, 0, 16, 8);
    OK(MPI_Type_create_resized(u, 0, 20, &t));
    OK(MPI_Type_free(&u)); /* t keeps what it needs */
    t = commit(t);
    extent_is(t, 0, 20, 8);
    { int idx[] = {0, 3, 5, 8}; ring(t, 2, idx, 4); }
    /* dup keeps the layout and the commit. */
    OK(MPI_Type_dup(t, &u));
    { int idx[] = {0, 3, 5, 8}; ring(u, 2, idx, 4); }
    OK(MPI_Type_free(&u));
    OK(MPI_Type_free(&t));

    /* resized with a negative lb. */
    OK(MPI_Type_create_resized(MPI_INT, -4, 16, &t));
    extent_is(t, -4, 16, 4);
    {
        MPI_Aint tl, te;
        OK(MPI_Type_get_true_extent(t, &tl, &te));
        CHECK(tl == 0 && te == 4);
    }
    OK(MPI_Type_free(&t));

    /* subarray 4x6, 2x3 at (1,2), C order: 8 9 10, 14 15 16. */
    {
        int sz[] = {4, 6}, sub[] = {2, 3}, st[] = {1, 2};
        OK(MPI_Type_create_subarray(2, sz, sub, st, MPI_ORDER_C, MPI_INT, &t));
        t = commit(t);
        extent_is(t, 0, 96, 24);
        int idx[] = {8, 9, 10, 14, 15, 16};
        ring(t, 1, idx, 6);
        OK(MPI_Type_free(&t));
        /* Fortran order: element (i,j) at i + 4j. */
        OK(MPI_Type_create_subarray(2, sz, sub, st, MPI_ORDER_FORTRAN, MPI_INT, &t));
        t = commit(t);
        int fidx[] = {9, 10, 13, 14, 17, 18};
        ring(t, 1, fidx, 6);
        OK(MPI_Type_free(&t));
    }

    /* subarray of a 3-D array 3x4x5: 2x2x3 at (1,1,2). */
    {
        int sz[] = {3, 4, 5}, sub[] = {2, 2, 3}, st[] = {1, 1, 2};
        OK(MPI_Type_create_subarray(3, sz, sub, st, MPI_ORDER_C, MPI_INT, &t));
        t = commit(t);
        extent_is(t, 0, 240, 48);
        int idx[] = {27, 28, 29, 32, 33, 34, 47, 48, 49, 52, 53, 54};
        ring(t, 1, idx, 12);
        OK(MPI_Type_free(&t));
    }

    /* A struct of mixed types, resized to the C struct. */
    {
        int bl[] = {1, 1, 3};
        MPI_Aint dp[] = {offsetof(struct mixed, a), offsetof(struct mixed, b),
                         offsetof(struct mixed, c)};
        MPI_Datatype ty[] = {MPI_INT, MPI_DOUBLE, MPI_CHAR};
        OK(MPI_Type_create_struct(3, bl, dp, ty, &u));
        /* ub 19 padded to the double's alignment: 24 = sizeof. */
        extent_is(u, 0, (MPI_Aint)sizeof(struct mixed), 15);
        MPI_Aint tl, te;
        OK(MPI_Type_get_true_extent(u, &tl, &te));
        CHECK(tl == 0 && te == 19);
        OK(MPI_Type_create_resized(u, 0, sizeof(struct mixed), &t));
        OK(MPI_Type_free(&u));
        t = commit(t);
        struct mixed s[3], r[3];
        memset(s, 0x5a, sizeof s);
        memset(r, 0x77, sizeof r);
        for (int i = 0; i < 3; i++) {
            s[i].a = val(rank, i);
            s[i].b = 0.5 * val(rank, i);
            s[i].c[0] = 'a' + i, s[i].c[1] = 'b' + rank, s[i].c[2] = 'z';
        }
        MPI_Status stt;
        OK(MPI_Sendrecv(s, 3, t, next, 9, r, 3, t, prev, 9, MPI_COMM_WORLD, &stt));
        for (int i = 0; i < 3; i++) {
            CHECK(r[i].a == val(prev, i));
            CHECK(r[i].b == 0.5 * val(prev, i));
            CHECK(r[i].c[0] == 'a' + i && r[i].c[1] == 'b' + prev && r[i].c[2] == 'z');
        }
        int n;
        OK(MPI_Get_elements(&stt, t, &n));
        CHECK(n == 15);
        OK(MPI_Type_free(&t));
    }

    /* Pack/Unpack: a vector then two doubles, round trip. */
    {
        int a[N], b[N];
        double d[2] = {1.5, -2.25}, e[2] = {0, 0};
        for (int i = 0; i < N; i++) a[i] = val(rank, i), b[i] = -1;
        OK(MPI_Type_vector(3, 2, 4, MPI_INT, &t));
        t = commit(t);
        int ps, pd;
        OK(MPI_Pack_size(1, t, MPI_COMM_WORLD, &ps));
        CHECK(ps == 24);
        OK(MPI_Pack_size(2, MPI_DOUBLE, MPI_COMM_WORLD, &pd));
        CHECK(pd == 16);
        char buf[64];
        int pos = 0;
        OK(MPI_Pack(a, 1, t, buf, sizeof buf, &pos, MPI_COMM_WORLD));
        CHECK(pos == 24);
        OK(MPI_Pack(d, 2, MPI_DOUBLE, buf, sizeof buf, &pos, MPI_COMM_WORLD));
        CHECK(pos == 40);
        int flat[6];
        memcpy(flat, buf, sizeof flat);
        int idx[] = {0, 1, 4, 5, 8, 9};
        for (int k = 0; k < 6; k++) CHECK(flat[k] == val(rank, idx[k]));
        /* The packed bytes travel as MPI_PACKED. */
        char rb[64];
        OK(MPI_Sendrecv(buf, pos, MPI_PACKED, next, 11, rb, sizeof rb, MPI_PACKED, prev, 11,
                        MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        pos = 0;
        OK(MPI_Unpack(rb, 40, &pos, b, 1, t, MPI_COMM_WORLD));
        OK(MPI_Unpack(rb, 40, &pos, e, 2, MPI_DOUBLE, MPI_COMM_WORLD));
        CHECK(pos == 40);
        for (int i = 0; i < N; i++) {
            int in = (i < 10) && (i % 4 < 2);
            CHECK(b[i] == (in ? val(prev, i) : -1));
        }
        CHECK(e[0] == 1.5 && e[1] == -2.25);
        /* Too small an output buffer; reading beyond the input. */
        pos = 30;
        FAILS(MPI_ERR_TRUNCATE, MPI_Pack(a, 1, t, buf, 40, &pos, MPI_COMM_WORLD));
        pos = 20;
        FAILS(MPI_ERR_TRUNCATE, MPI_Unpack(rb, 40, &pos, b, 1, t, MPI_COMM_WORLD));

        /* A partial message: 8 ints into two vectors of 6 ints each. */
        MPI_Status st;
        OK(MPI_Sendrecv(a, 8, MPI_INT, next, 12, b, 2, t, prev, 12, MPI_COMM_WORLD, &st));
        int n;
        OK(MPI_Get_count(&st, t, &n));
        CHECK(n == MPI_UNDEFINED);
        OK(MPI_Get_elements(&st, t, &n));
        CHECK(n == 8);
        MPI_Count nx;
        OK(MPI_Get_elements_x(&st, t, &nx));
        CHECK(nx == 8);
        /* The first element and the first two ints of the second. */
        CHECK(b[0] == val(prev, 0) && b[9] == val(prev, 5) && b[10] == val(prev, 6) &&
              b[11] == val(prev, 7));
        /* A longer message than the type holds: truncation. */
        FAILS(MPI_ERR_TRUNCATE, MPI_Sendrecv(a, 7, MPI_INT, next, 13, b, 1, t, prev, 13,
                                             MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        OK(MPI_Type_free(&t));
    }

    /* Collectives with noncontiguous types (packed blocks). */
    {
        int a[N], r[N];
        MPI_Datatype v, v2;
        OK(MPI_Type_vector(3, 2, 4, MPI_INT, &v));
        v = commit(v);
        OK(MPI_Type_vector(2, 1, 2, MPI_INT, &v2)); /* ints 0 and 2, extent 3 ints */
        v2 = commit(v2);
        for (int i = 0; i < N; i++) a[i] = rank == 0 ? val(0, i) : -1;
        OK(MPI_Bcast(a, 1, v, 0, MPI_COMM_WORLD));
        for (int i = 0; i < N; i++) {
            int in = (i < 10) && (i % 4 < 2);
            CHECK(a[i] == (in || rank == 0 ? val(0, i) : -1));
        }
        /* Allgather: send ints 0 and 2 as one v2, receive plain ints. */
        for (int i = 0; i < N; i++) a[i] = val(rank, i), r[i] = -1;
        OK(MPI_Allgather(a, 1, v2, r, 2, MPI_INT, MPI_COMM_WORLD));
        for (int q = 0; q < size; q++) CHECK(r[2 * q] == val(q, 0) && r[2 * q + 1] == val(q, 2));
        /* Gather plain ints into v2 blocks 3 ints apart at the root. */
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Gather(a, 2, MPI_INT, r, 1, v2, 0, MPI_COMM_WORLD));
        if (rank == 0)
            for (int q = 0; q < size; q++)
                CHECK(r[3 * q] == val(q, 0) && r[3 * q + 1] == -1 && r[3 * q + 2] == val(q, 1));
        /* Scatter v2 blocks from the root as plain ints. */
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Scatter(a, 1, v2, r, 2, MPI_INT, 0, MPI_COMM_WORLD));
        CHECK(r[0] == val(0, 3 * rank) && r[1] == val(0, 3 * rank + 2) && r[2] == -1);
        /* Alltoall v2 to v2: block j of rank i to block i of rank j. */
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Alltoall(a, 1, v2, r, 1, v2, MPI_COMM_WORLD));
        for (int q = 0; q < size; q++)
            CHECK(r[3 * q] == val(q, 3 * rank) && r[3 * q + 1] == -1 &&
                  r[3 * q + 2] == val(q, 3 * rank + 2));
        /* v-forms: rank q's block is q+1 v2 elements (2 ints each), placed
         * at displacement 3q (in extents of 3 ints) at the receiver. */
        int rc[4], dp[4], sc[4], sd[4];
        for (int q = 0; q < size; q++) rc[q] = q + 1, dp[q] = q * (q + 1) / 2 + q;
        for (int i = 0; i < N; i++) a[i] = val(rank, i), r[i] = -1;
        /* Gatherv: each rank sends 2(rank+1) plain ints. */
        OK(MPI_Gatherv(a, 2 * (rank + 1), MPI_INT, r, rc, dp, v2, 0, MPI_COMM_WORLD));
        if (rank == 0)
            for (int q = 0; q < size; q++)
                for (int e = 0; e < q + 1; e++) {
                    int at = 3 * (dp[q] + e);
                    CHECK(r[at] == val(q, 2 * e) && r[at + 1] == -1 && r[at + 2] == val(q, 2 * e + 1));
                }
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Allgatherv(a, 2 * (rank + 1), MPI_INT, r, rc, dp, v2, MPI_COMM_WORLD));
        for (int q = 0; q < size; q++)
            for (int e = 0; e < q + 1; e++) {
                int at = 3 * (dp[q] + e);
                CHECK(r[at] == val(q, 2 * e) && r[at + 1] == -1 && r[at + 2] == val(q, 2 * e + 1));
            }
        /* Scatterv from v2 blocks back to plain ints. */
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Scatterv(a, rc, dp, v2, r, 2 * (rank + 1), MPI_INT, 0, MPI_COMM_WORLD));
        for (int e = 0; e < rank + 1; e++) {
            int at = 3 * (dp[rank] + e);
            CHECK(r[2 * e] == val(0, at) && r[2 * e + 1] == val(0, at + 2));
        }
        CHECK(r[2 * (rank + 1)] == -1);
        /* Alltoallv: one v2 to each rank, at displacement q (3q ints). */
        for (int q = 0; q < size; q++) sc[q] = 1, sd[q] = q;
        for (int i = 0; i < N; i++) r[i] = -1;
        OK(MPI_Alltoallv(a, sc, sd, v2, r, sc, sd, v2, MPI_COMM_WORLD));
        for (int q = 0; q < size; q++)
            CHECK(r[3 * q] == val(q, 3 * rank) && r[3 * q + 1] == -1 &&
                  r[3 * q + 2] == val(q, 3 * rank + 2));
        OK(MPI_Type_free(&v));
        OK(MPI_Type_free(&v2));
    }

    /* Errors. */
    OK(MPI_Type_vector(2, 1, 2, MPI_INT, &t)); /* not committed */
    {
        int x[4] = {0};
        FAILS(MPI_ERR_TYPE, MPI_Send(x, 1, t, next, 20, MPI_COMM_WORLD));
        FAILS(MPI_ERR_TYPE, MPI_Recv(x, 1, t, prev, 20, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    }
    OK(MPI_Type_commit(&t));
    {
        /* Irecv and Issend of a noncontiguous type: unpacked at completion. */
        int x[4] = {-1, -1, -1, -1}, y[4], x2[8], z[3] = {5, 6, 7};
        for (int i = 0; i < 4; i++) y[i] = val(rank, i);
        for (int i = 0; i < 8; i++) x2[i] = -1;
        MPI_Request rq[4];
        MPI_Status st[4];
        OK(MPI_Irecv(x, 1, t, prev, 21, MPI_COMM_WORLD, &rq[0]));
        OK(MPI_Issend(y, 1, t, next, 21, MPI_COMM_WORLD, &rq[1]));
        /* A shorter message: only what arrived is unpacked. */
        OK(MPI_Irecv(x2, 2, t, prev, 22, MPI_COMM_WORLD, &rq[2]));
        OK(MPI_Isend(z, 3, MPI_INT, next, 22, MPI_COMM_WORLD, &rq[3]));
        OK(MPI_Waitall(4, rq, st));
        CHECK(x[0] == val(prev, 0) && x[1] == -1 && x[2] == val(prev, 2) && x[3] == -1);
        int cnt = -1;
        OK(MPI_Get_count(&st[0], t, &cnt));
        CHECK(cnt == 1);
        CHECK(st[0].MPI_SOURCE == prev && st[0].MPI_TAG == 21);
        CHECK(x2[0] == 5 && x2[2] == 6 && x2[3] == 7 && x2[5] == -1 && x2[1] == -1); /* extent 3 */
        OK(MPI_Get_elements(&st[2], t, &cnt));
        CHECK(cnt == 3);
        /* A reduction on a noncontiguous type: MPI_ERR_OP. */
        FAILS(MPI_ERR_OP, MPI_Allreduce(MPI_IN_PLACE, x, 1, t, MPI_SUM, MPI_COMM_WORLD));
    }
    OK(MPI_Type_free(&t));
    u = t; /* MPI_DATATYPE_NULL now */
    FAILS(MPI_ERR_TYPE, MPI_Type_commit(&u));
    FAILS(MPI_ERR_TYPE, MPI_Type_contiguous(2, MPI_DATATYPE_NULL, &t));
    FAILS(MPI_ERR_COUNT, MPI_Type_contiguous(-1, MPI_INT, &t));
    FAILS(MPI_ERR_COUNT, MPI_Type_vector(2, -1, 2, MPI_INT, &t));
    {
        int bl[] = {1, -2}, dp[] = {0, 4};
        FAILS(MPI_ERR_COUNT, MPI_Type_indexed(2, bl, dp, MPI_INT, &t));
        int sz[] = {4}, sub[] = {3}, st[] = {2};
        FAILS(MPI_ERR_ARG, MPI_Type_create_subarray(1, sz, sub, st, MPI_ORDER_C, MPI_INT, &t));
        FAILS(MPI_ERR_ARG, MPI_Type_create_subarray(1, sz, sz, st, 3, MPI_INT, &t));
    }
    u = MPI_INT;
    FAILS(MPI_ERR_TYPE, MPI_Type_free(&u));
    /* Sizes beyond 2^64 bytes: overflow, not a wrapped type. */
    /* Elements whose offsets overflow: refused before anything is read. */
    OK(MPI_Type_create_resized(MPI_INT, 0, (MPI_Aint)1 << 62, &t));
    OK(MPI_Type_commit(&t));
    {
        int x[4] = {0};
        FAILS(MPI_ERR_COUNT, MPI_Send(x, 4, t, next, 22, MPI_COMM_WORLD));
    }
    OK(MPI_Type_free(&t));
    OK(MPI_Type_contiguous(INT_MAX, MPI_DOUBLE, &t));
    FAILS(MPI_ERR_COUNT, MPI_Type_contiguous(INT_MAX, t, &u));
    OK(MPI_Type_free(&t));

    report_ok("types");
    OK(MPI_Finalize());
    return 0;
}
