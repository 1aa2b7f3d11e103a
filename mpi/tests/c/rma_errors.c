/* One-sided bad arguments under MPI_ERRORS_RETURN: each returns its class
 * and changes nothing. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int *mem;
    MPI_Win win;
    FAILS(MPI_ERR_SIZE, MPI_Win_allocate(-1, 4, MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    FAILS(MPI_ERR_DISP, MPI_Win_allocate(16, 0, MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    FAILS(MPI_ERR_COMM, MPI_Win_allocate(16, 4, MPI_INFO_NULL, MPI_COMM_NULL, &mem, &win));
    OK(MPI_Win_allocate(4 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    MPI_Errhandler eh;
    OK(MPI_Win_get_errhandler(win, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL);
    OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    OK(MPI_Win_get_errhandler(win, &eh));
    CHECK(eh == MPI_ERRORS_RETURN);
    int v[8] = {0};
    /* Outside any epoch. */
    FAILS(MPI_ERR_RMA_SYNC, MPI_Put(v, 1, MPI_INT, 0, 0, 1, MPI_INT, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_unlock(0, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_unlock_all(win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_flush(0, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_flush_all(win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_complete(win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_wait(win));
    MPI_Request rq;
    FAILS(MPI_ERR_RMA_SYNC, MPI_Rput(v, 1, MPI_INT, 0, 0, 1, MPI_INT, win, &rq));
    OK(MPI_Win_lock_all(0, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_lock_all(0, win));
    FAILS(MPI_ERR_RMA_SYNC, MPI_Win_free(&win));
    /* Bad target, displacement, range, datatype, op. */
    FAILS(MPI_ERR_RANK, MPI_Put(v, 1, MPI_INT, size, 0, 1, MPI_INT, win));
    FAILS(MPI_ERR_RANK, MPI_Get(v, 1, MPI_INT, -7, 0, 1, MPI_INT, win));
    FAILS(MPI_ERR_DISP, MPI_Put(v, 1, MPI_INT, 0, -1, 1, MPI_INT, win));
    FAILS(MPI_ERR_RMA_RANGE, MPI_Put(v, 1, MPI_INT, 0, 4, 1, MPI_INT, win));
    FAILS(MPI_ERR_RMA_RANGE, MPI_Get(v, 5, MPI_INT, 0, 0, 5, MPI_INT, win));
    FAILS(MPI_ERR_RMA_RANGE, MPI_Accumulate(v, 2, MPI_INT, 0, 3, 2, MPI_INT, MPI_SUM, win));
    FAILS(MPI_ERR_COUNT, MPI_Put(v, -1, MPI_INT, 0, 0, -1, MPI_INT, win));
    FAILS(MPI_ERR_TYPE, MPI_Put(v, 1, MPI_DATATYPE_NULL, 0, 0, 1, MPI_INT, win));
    FAILS(MPI_ERR_TYPE, MPI_Put(v, 2, MPI_INT, 0, 0, 1, MPI_INT, win));
    FAILS(MPI_ERR_OP, MPI_Accumulate(v, 1, MPI_DOUBLE, 0, 0, 1, MPI_DOUBLE, MPI_BAND, win));
    FAILS(MPI_ERR_OP, MPI_Accumulate(v, 1, MPI_INT, 0, 0, 1, MPI_INT, MPI_OP_NULL, win));
    FAILS(MPI_ERR_OP, MPI_Accumulate(v, 1, MPI_INT, 0, 0, 1, MPI_INT, MPI_MINLOC, win));
    FAILS(MPI_ERR_OP, MPI_Accumulate(v, 1, MPI_2INT, 0, 0, 1, MPI_2INT, MPI_SUM, win));
    FAILS(MPI_ERR_TYPE, MPI_Compare_and_swap(v, v, v, MPI_DOUBLE, 0, 0, win));
    FAILS(MPI_ERR_BUFFER, MPI_Put(NULL, 1, MPI_INT, 0, 0, 1, MPI_INT, win));
    /* Nothing above changed anything: the window is still zero. */
    int z[4] = {1, 1, 1, 1};
    OK(MPI_Get(z, 4, MPI_INT, 0, 0, 4, MPI_INT, win));
    OK(MPI_Win_flush(0, win));
    for (int i = 0; i < 4; i++) CHECK(z[i] == 0);
    OK(MPI_Win_unlock_all(win));
    FAILS(MPI_ERR_LOCKTYPE, MPI_Win_lock(99, 0, 0, win));
    FAILS(MPI_ERR_ASSERT, MPI_Win_fence(1, win));
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_free(&win));
    /* A freed or null window: MPI_ERR_WIN (through MPI_COMM_WORLD's handler). */
    FAILS(MPI_ERR_WIN, MPI_Win_fence(0, win));
    FAILS(MPI_ERR_WIN, MPI_Win_fence(0, MPI_WIN_NULL));
    /* Flavors: attaching to an allocated window, querying a dynamic one. */
    MPI_Win a, d;
    OK(MPI_Win_allocate(8, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &a));
    OK(MPI_Win_set_errhandler(a, MPI_ERRORS_RETURN));
    FAILS(MPI_ERR_RMA_FLAVOR, MPI_Win_attach(a, v, sizeof v));
    OK(MPI_Win_free(&a));
    OK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &d));
    OK(MPI_Win_set_errhandler(d, MPI_ERRORS_RETURN));
    MPI_Aint qs;
    int qd;
    void *qp;
    FAILS(MPI_ERR_RMA_FLAVOR, MPI_Win_shared_query(d, 0, &qs, &qd, &qp));
    FAILS(MPI_ERR_SIZE, MPI_Win_attach(d, v, -1));
    OK(MPI_Win_free(&d));
    report_ok("rma_errors");
    MPI_Finalize();
    return 0;
}
