/* The nonblocking calls' common case (mpi/src/p2p.rs `isend_dense`,
 * `irecv_dense`, tested at the head of `isend`/`irecv`) and `MPI_Waitall`'s completion of
 * finished requests in one visit (request.rs `batch`) give what the general
 * paths give: wildcard statuses at the right index, empty messages with null
 * buffers, a truncated receive's MPI_ERR_IN_STATUS, MPI_REQUEST_NULL and
 * repeated entries in the array, a first request still pending when the
 * others have finished, an invalid handle that fails the call before any
 * request completes, the argument errors the fast paths decline, and a
 * user error handler called for an error found on the fast path. */
#include <string.h>
#include "check.h"

static int handled = 0;
static void on_error(MPI_Comm *c, int *code, ...) {
    (void)c;
    int cls = -1;
    MPI_Error_class(*code, &cls);
    handled = cls;
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    int me, n;
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &n));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int next = (me + 1) % n, prev = (me + n - 1) % n;
    enum { W = 16 };

    /* osu_bw's pattern with wildcards: every status at its own index. */
    for (int rep = 0; rep < 20; rep++) {
        int s[W], r[W];
        MPI_Request rr[W], sr[W];
        MPI_Status st[W];
        for (int j = 0; j < W; j++) {
            s[j] = me * 1000 + rep * W + j;
            r[j] = -1;
            OK(MPI_Irecv(&r[j], 1, MPI_INT, j % 2 ? MPI_ANY_SOURCE : prev,
                         j % 3 ? MPI_ANY_TAG : 40 + j, MPI_COMM_WORLD, &rr[j]));
        }
        for (int j = 0; j < W; j++)
            OK(MPI_Isend(&s[j], 1, MPI_INT, next, 40 + j, MPI_COMM_WORLD, &sr[j]));
        OK(MPI_Waitall(W, sr, MPI_STATUSES_IGNORE));
        memset(st, 0x5a, sizeof st);
        OK(MPI_Waitall(W, rr, st));
        for (int j = 0; j < W; j++) {
            int cnt = -1;
            CHECK(rr[j] == MPI_REQUEST_NULL && sr[j] == MPI_REQUEST_NULL);
            CHECK(r[j] == prev * 1000 + rep * W + j);
            CHECK(st[j].MPI_SOURCE == prev && st[j].MPI_TAG == 40 + j);
            OK(MPI_Get_count(&st[j], MPI_INT, &cnt));
            CHECK(cnt == 1);
        }
    }

    /* MPI_REQUEST_NULL and empty messages with null buffers in the array;
     * the first receive is posted for a message sent last, so the others
     * finish while it is pending. */
    {
        MPI_Request rq[5];
        MPI_Status st[5];
        int a = me, b = -1;
        OK(MPI_Irecv(&b, 1, MPI_INT, prev, 9, MPI_COMM_WORLD, &rq[0]));
        rq[1] = MPI_REQUEST_NULL;
        OK(MPI_Irecv(NULL, 0, MPI_DOUBLE, prev, 8, MPI_COMM_WORLD, &rq[2]));
        OK(MPI_Isend(NULL, 0, MPI_DOUBLE, next, 8, MPI_COMM_WORLD, &rq[3]));
        rq[4] = MPI_REQUEST_NULL;
        OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_Request last;
        OK(MPI_Isend(&a, 1, MPI_INT, next, 9, MPI_COMM_WORLD, &last));
        memset(st, 0x5a, sizeof st);
        OK(MPI_Waitall(5, rq, st));
        OK(MPI_Wait(&last, MPI_STATUS_IGNORE));
        CHECK(b == prev && st[0].MPI_SOURCE == prev && st[0].MPI_TAG == 9);
        CHECK(st[2].MPI_SOURCE == prev && st[2].MPI_TAG == 8);
        int cnt = -1;
        OK(MPI_Get_count(&st[2], MPI_DOUBLE, &cnt));
        CHECK(cnt == 0);
        /* Null entries: the empty status. */
        CHECK(st[1].MPI_SOURCE == MPI_ANY_SOURCE && st[1].MPI_TAG == MPI_ANY_TAG);
        CHECK(st[4].MPI_SOURCE == MPI_ANY_SOURCE && st[4].MPI_TAG == MPI_ANY_TAG);
        for (int j = 0; j < 5; j++) CHECK(rq[j] == MPI_REQUEST_NULL);
    }

    /* A truncated receive among finished ones: MPI_ERR_IN_STATUS, each
     * status with its own error field. */
    {
        double d[4] = {1, 2, 3, 4}, small[2], big[4];
        MPI_Request rq[3];
        MPI_Status st[3];
        OK(MPI_Irecv(big, 4, MPI_DOUBLE, prev, 11, MPI_COMM_WORLD, &rq[0]));
        OK(MPI_Irecv(small, 2, MPI_DOUBLE, prev, 12, MPI_COMM_WORLD, &rq[1]));
        OK(MPI_Irecv(big, 4, MPI_DOUBLE, prev, 13, MPI_COMM_WORLD, &rq[2]));
        for (int t = 11; t <= 13; t++) OK(MPI_Send(d, 4, MPI_DOUBLE, next, t, MPI_COMM_WORLD));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        for (int j = 0; j < 3; j++) st[j].MPI_ERROR = -77;
        FAILS(MPI_ERR_IN_STATUS, MPI_Waitall(3, rq, st));
        CHECK(st[0].MPI_ERROR == MPI_SUCCESS && st[2].MPI_ERROR == MPI_SUCCESS);
        CHECK(st[1].MPI_ERROR == MPI_ERR_TRUNCATE);
        for (int j = 0; j < 3; j++) CHECK(rq[j] == MPI_REQUEST_NULL);
    }

    /* An invalid handle among finished ones: MPI_ERR_REQUEST, and none of
     * them completed (the valid ones complete afterwards). */
    {
        int x = me, y = -1;
        MPI_Request rq[3];
        OK(MPI_Irecv(&y, 1, MPI_INT, prev, 14, MPI_COMM_WORLD, &rq[0]));
        OK(MPI_Isend(&x, 1, MPI_INT, next, 14, MPI_COMM_WORLD, &rq[1]));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        MPI_Request keep0 = rq[0], keep1 = rq[1];
        rq[2] = (MPI_Request)0x7ffffff8;
        FAILS(MPI_ERR_REQUEST, MPI_Waitall(3, rq, MPI_STATUSES_IGNORE));
        CHECK(rq[0] == keep0 && rq[1] == keep1);
        OK(MPI_Waitall(2, rq, MPI_STATUSES_IGNORE));
        CHECK(y == prev && rq[0] == MPI_REQUEST_NULL && rq[1] == MPI_REQUEST_NULL);
    }

    /* What the fast paths decline: the general path's errors. */
    {
        int v = 1;
        MPI_Request r = MPI_REQUEST_NULL;
        FAILS(MPI_ERR_TAG, MPI_Isend(&v, 1, MPI_INT, next, -5, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_RANK, MPI_Isend(&v, 1, MPI_INT, n, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_COUNT, MPI_Isend(&v, -1, MPI_INT, next, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_BUFFER, MPI_Isend(NULL, 1, MPI_INT, next, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_TYPE, MPI_Isend(&v, 1, MPI_DATATYPE_NULL, next, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_COMM, MPI_Isend(&v, 1, MPI_INT, next, 0, MPI_COMM_NULL, &r));
        FAILS(MPI_ERR_ARG, MPI_Isend(&v, 1, MPI_INT, next, 0, MPI_COMM_WORLD, NULL));
        FAILS(MPI_ERR_TAG, MPI_Irecv(&v, 1, MPI_INT, prev, -7, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_RANK, MPI_Irecv(&v, 1, MPI_INT, n + 3, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_COUNT, MPI_Irecv(&v, -2, MPI_INT, prev, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_BUFFER, MPI_Irecv(NULL, 2, MPI_INT, prev, 0, MPI_COMM_WORLD, &r));
        FAILS(MPI_ERR_COMM, MPI_Irecv(&v, 1, MPI_INT, prev, 0, (MPI_Comm)0x7ffffff8, &r));
        FAILS(MPI_ERR_ARG, MPI_Irecv(&v, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, NULL));
        CHECK(r == MPI_REQUEST_NULL);
        /* MPI_PROC_NULL: complete at once, with its status. */
        MPI_Status st;
        OK(MPI_Irecv(&v, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &r));
        OK(MPI_Wait(&r, &st));
        CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);
        OK(MPI_Isend(&v, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &r));
        OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    }

    /* A communicator's own handler gets an error the fast path declines. */
    {
        MPI_Comm dup;
        MPI_Errhandler eh;
        OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
        OK(MPI_Comm_create_errhandler(on_error, &eh));
        OK(MPI_Comm_set_errhandler(dup, eh));
        int v = 1;
        MPI_Request r;
        handled = 0;
        FAILS(MPI_ERR_TAG, MPI_Isend(&v, 1, MPI_INT, next, -1, dup, &r));
        CHECK(handled == MPI_ERR_TAG);
        handled = 0;
        FAILS(MPI_ERR_RANK, MPI_Send(&v, 1, MPI_INT, n, 0, dup));
        CHECK(handled == MPI_ERR_RANK);
        /* and the fast paths work on it */
        handled = 0;
        int y = -1;
        OK(MPI_Irecv(&y, 1, MPI_INT, prev, 3, dup, &r));
        OK(MPI_Send(&me, 1, MPI_INT, next, 3, dup));
        OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        CHECK(y == prev && handled == 0);
        OK(MPI_Errhandler_free(&eh));
        OK(MPI_Comm_free(&dup));
    }

    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (me == 0) printf("OK nonblocking_fast %d ranks\n", n);
    OK(MPI_Finalize());
    return 0;
}
