/* Window error handlers of the program's own (MPI_Win_create_errhandler):
 * MPI_Win_call_errhandler and a failing one-sided call invoke it with the
 * window and the code, and the call returns the code; MPI_Win_get_errhandler
 * gives it back; a communicator's handler cannot be set on a window. Runs on
 * any number of ranks. */
#include "check.h"

static int calls, last_code;
static MPI_Win expected;

static void on_error(MPI_Win *win, int *code, ...) {
    CHECK(*win == expected);
    last_code = *code;
    calls++;
}

static void comm_handler(MPI_Comm *comm, int *code, ...) {
    (void)comm;
    (void)code;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int buf[2] = {0, 0};
    for (int round = 0; round < 3; round++) {
        MPI_Win win;
        MPI_Errhandler eh, got;
        OK(MPI_Win_create(buf, sizeof buf, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        expected = win;
        OK(MPI_Win_create_errhandler(on_error, &eh));
        OK(MPI_Win_set_errhandler(win, eh));
        OK(MPI_Win_get_errhandler(win, &got));
        CHECK(got == eh);
        calls = 0;
        CHECK(MPI_Win_call_errhandler(win, MPI_ERR_OTHER) == MPI_ERR_OTHER);
        CHECK(calls == 1 && last_code == MPI_ERR_OTHER);
        /* A put to a rank that does not exist, inside an epoch. */
        OK(MPI_Win_fence(0, win));
        int rc = MPI_Put(buf, 1, MPI_INT, size, 0, 1, MPI_INT, win);
        int cls = -1;
        MPI_Error_class(rc, &cls);
        CHECK(cls == MPI_ERR_RANK && calls == 2);
        MPI_Error_class(last_code, &cls);
        CHECK(cls == MPI_ERR_RANK);
        OK(MPI_Win_fence(0, win));
        OK(MPI_Errhandler_free(&eh));
        CHECK(eh == MPI_ERRHANDLER_NULL);
        /* A communicator's handler is not a window's. */
        MPI_Errhandler ceh;
        OK(MPI_Comm_create_errhandler(comm_handler, &ceh));
        OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
        CHECK(MPI_Win_set_errhandler(win, ceh) != MPI_SUCCESS);
        OK(MPI_Errhandler_free(&ceh));
        OK(MPI_Win_free(&win));
    }
    report_ok("rma_errhandler");
    MPI_Finalize();
    return 0;
}
