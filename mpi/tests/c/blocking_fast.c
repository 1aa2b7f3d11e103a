/* The blocking calls' and the one-sided calls' fast paths (straight to dos,
 * mpi/src/p2p.rs `dense_buffer`, rma.rs `win_fn!`'s fast arm) give what the
 * general path gives: statuses of wildcard receives, empty messages with null
 * buffers, truncation with its status, the argument errors they decline to
 * the general path, a put + flush ring over every rank, and the errors of a
 * put out of range or a flush or put outside an epoch, which the fast path
 * declines and the general one reports. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    int me, n;
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &n));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int next = (me + 1) % n, prev = (me + n - 1) % n;
    MPI_Status st;

    /* Wildcards: the status names the sender, the tag and the length. */
    for (int i = 0; i < 50; i++) {
        int x[3] = {me, i, -1}, y[4] = {0, 0, 0, 0}, cnt = -1;
        OK(MPI_Send(x, 3, MPI_INT, next, 7 + i % 3, MPI_COMM_WORLD));
        OK(MPI_Recv(y, 4, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 7 + i % 3);
        OK(MPI_Get_count(&st, MPI_INT, &cnt));
        CHECK(cnt == 3 && y[0] == prev && y[1] == i && y[2] == -1 && y[3] == 0);
    }
    /* Empty messages with null buffers, from a named source and tag. */
    OK(MPI_Send(NULL, 0, MPI_DOUBLE, next, 3, MPI_COMM_WORLD));
    OK(MPI_Recv(NULL, 0, MPI_DOUBLE, prev, 3, MPI_COMM_WORLD, &st));
    CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 3);
    /* Truncation: MPI_ERR_TRUNCATE, with the error in the status too. */
    {
        double d[4] = {1, 2, 3, 4}, r[2] = {0, 0};
        OK(MPI_Send(d, 4, MPI_DOUBLE, next, 5, MPI_COMM_WORLD));
        st.MPI_ERROR = MPI_SUCCESS;
        FAILS(MPI_ERR_TRUNCATE, MPI_Recv(r, 2, MPI_DOUBLE, prev, 5, MPI_COMM_WORLD, &st));
        CHECK(st.MPI_ERROR == MPI_ERR_TRUNCATE);
    }
    /* What the fast paths decline: the general path's errors and cases. */
    int v = 1;
    FAILS(MPI_ERR_TAG, MPI_Send(&v, 1, MPI_INT, next, -5, MPI_COMM_WORLD));
    FAILS(MPI_ERR_RANK, MPI_Send(&v, 1, MPI_INT, n, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Send(&v, -1, MPI_INT, next, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_BUFFER, MPI_Send(NULL, 1, MPI_INT, next, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE, MPI_Send(&v, 1, MPI_DATATYPE_NULL, next, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TAG, MPI_Recv(&v, 1, MPI_INT, prev, -7, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_RANK, MPI_Recv(&v, 1, MPI_INT, n + 3, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_BUFFER, MPI_Recv(NULL, 2, MPI_INT, prev, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_COMM, MPI_Send(&v, 1, MPI_INT, next, 0, MPI_COMM_NULL));
    OK(MPI_Send(&v, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD));
    OK(MPI_Recv(&v, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);

    /* One-sided: a ring of put + flush, checked by the target. */
    long *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(64 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    memset(mem, 0, 64 * sizeof(long));
    OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Win_lock(MPI_LOCK_SHARED, next, 0, win));
    for (long i = 0; i < 64; i++) {
        long x = 1000 * me + i;
        OK(MPI_Put(&x, 1, MPI_LONG, next, i, 1, MPI_LONG, win));
        OK(MPI_Win_flush(next, win));
    }
    /* Out of the target's part, a bad rank, and a flush of a rank not
     * locked (when there is one). */
    long x = 0;
    FAILS(MPI_ERR_RMA_RANGE, MPI_Put(&x, 1, MPI_LONG, next, 64, 1, MPI_LONG, win));
    FAILS(MPI_ERR_RANK, MPI_Put(&x, 1, MPI_LONG, n, 0, 1, MPI_LONG, win));
    FAILS(MPI_ERR_RANK, MPI_Win_flush(-5, win));
    if (n > 1) FAILS(MPI_ERR_RMA_SYNC, MPI_Win_flush(me, win));
    OK(MPI_Win_unlock(next, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_flush(next, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Put(&x, 1, MPI_LONG, next, 0, 1, MPI_LONG, win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Win_lock(MPI_LOCK_SHARED, me, 0, win));
    for (long i = 0; i < 64; i++) CHECK(mem[i] == 1000 * prev + i);
    OK(MPI_Win_unlock(me, win));
    OK(MPI_Win_free(&win));
    report_ok("blocking_fast");
    OK(MPI_Finalize());
    return 0;
}
