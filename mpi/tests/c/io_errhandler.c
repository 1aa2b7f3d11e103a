/* MPI_File_create_errhandler: the program's handler is called with the
 * file (MPI_FILE_NULL for open) and the error code, and the function then
 * returns the code; a communicator's handler cannot be set on a file. */
#include "check.h"

static int calls;
static MPI_File seen;
static int seen_code;

static void on_file_error(MPI_File *fh, int *code, ...) {
    calls++;
    seen = *fh;
    seen_code = *code;
}

static void on_comm_error(MPI_Comm *c, int *code, ...) { (void)c, (void)code; }

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Errhandler feh, ceh;
    OK(MPI_File_create_errhandler(on_file_error, &feh));
    OK(MPI_Comm_create_errhandler(on_comm_error, &ceh));
    /* The default of files: used by MPI_File_open itself. */
    OK(MPI_File_set_errhandler(MPI_FILE_NULL, feh));
    MPI_File fh;
    int rc = MPI_File_open(MPI_COMM_WORLD, "io_errhandler_missing", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh);
    int cls;
    MPI_Error_class(rc, &cls);
    CHECK(cls == MPI_ERR_NO_SUCH_FILE);
    CHECK(calls == 1 && seen == MPI_FILE_NULL && seen_code == rc);
    OK(MPI_File_set_errhandler(MPI_FILE_NULL, MPI_ERRORS_RETURN));

    OK(MPI_File_open(MPI_COMM_WORLD, "io_errhandler", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    CHECK(MPI_File_set_errhandler(fh, ceh) != MPI_SUCCESS);
    OK(MPI_File_set_errhandler(fh, feh));
    MPI_Errhandler got;
    OK(MPI_File_get_errhandler(fh, &got));
    CHECK(got == feh);
    /* A negative offset: MPI_ERR_ARG through the handler. */
    int x = 1;
    rc = MPI_File_write_at(fh, -1, &x, 1, MPI_INT, MPI_STATUS_IGNORE);
    MPI_Error_class(rc, &cls);
    CHECK(rc != MPI_SUCCESS && calls == 2 && seen == fh && seen_code == rc);
    /* MPI_File_call_errhandler goes to it too. */
    OK(MPI_File_call_errhandler(fh, MPI_ERR_OTHER) == MPI_ERR_OTHER ? MPI_SUCCESS : 1);
    CHECK(calls == 3 && seen_code == MPI_ERR_OTHER);
    OK(MPI_File_close(&fh));
    OK(MPI_Errhandler_free(&feh));
    OK(MPI_Errhandler_free(&ceh));
    report_ok("io_errhandler");
    MPI_Finalize();
    return 0;
}
