/* A file written by one job and read by a later one with another rank
 * count: `io_reread write` (block-cyclic through a vector view, collective)
 * then `io_reread read` (contiguous chunks, collective and independent). */
#include <string.h>
#include "check.h"

#define B 100
#define NBLK 60 /* divisible by 1 to 6 ranks */
#define TOTAL (B * NBLK)

int main(int argc, char **argv) {
    int rank, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    CHECK(argc == 2);
    MPI_File fh;
    MPI_Status st;
    int count;
    static int buf[TOTAL];
    if (strcmp(argv[1], "nofs") == 0) {
        /* A job without a dosfs: a dosfs name is a clear error, not a crash
         * (a plain name is a local file there: io_local.c). */
        FAILS(MPI_ERR_IO, MPI_File_open(MPI_COMM_WORLD, "dosfs:/io_persist", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
        FAILS(MPI_ERR_IO, MPI_File_delete("dosfs:/io_persist", MPI_INFO_NULL));
    } else if (strcmp(argv[1], "fatal") == 0) {
        /* MPI_ERRORS_ARE_FATAL as the default of files: a write to a file
         * opened read-only ends the job. */
        OK(MPI_File_set_errhandler(MPI_FILE_NULL, MPI_ERRORS_ARE_FATAL));
        OK(MPI_File_open(MPI_COMM_WORLD, "/io_persist", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
        MPI_File_write_at(fh, 0, buf, 1, MPI_INT, &st);
        printf("not reached\n");
    } else if (strcmp(argv[1], "write") == 0) {
        CHECK(NBLK % n == 0);
        int per = NBLK / n;
        MPI_Datatype vec, ft;
        OK(MPI_Type_vector(per, B, B * n, MPI_INT, &vec));
        OK(MPI_Type_create_resized(vec, 0, (MPI_Aint)B * n * per * 4, &ft));
        OK(MPI_Type_commit(&ft));
        for (int j = 0; j < per; j++)
            for (int i = 0; i < B; i++) buf[j * B + i] = 7 * ((j * n + rank) * B + i) + 1;
        OK(MPI_File_open(MPI_COMM_WORLD, "/io_persist", MPI_MODE_WRONLY | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
        OK(MPI_File_set_view(fh, (MPI_Offset)rank * B * 4, MPI_INT, ft, "native", MPI_INFO_NULL));
        OK(MPI_File_write_at_all(fh, 0, buf, per * B, MPI_INT, &st));
        OK(MPI_File_sync(fh));
        OK(MPI_File_close(&fh));
        OK(MPI_Type_free(&ft));
        OK(MPI_Type_free(&vec));
    } else {
        OK(MPI_File_open(MPI_COMM_WORLD, "/io_persist", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
        MPI_Offset size;
        OK(MPI_File_get_size(fh, &size));
        CHECK(size == (MPI_Offset)TOTAL * 4);
        int lo = TOTAL * rank / n, hi = TOTAL * (rank + 1) / n;
        OK(MPI_File_read_at_all(fh, (MPI_Offset)lo * 4, buf, hi - lo, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == hi - lo);
        for (int k = lo; k < hi; k++) CHECK(buf[k - lo] == 7 * k + 1);
        memset(buf, 0, sizeof buf);
        OK(MPI_File_read_at(fh, 0, buf, TOTAL, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == TOTAL);
        for (int k = 0; k < TOTAL; k++) CHECK(buf[k] == 7 * k + 1);
        OK(MPI_File_close(&fh));
    }
    report_ok(argv[1]);
    MPI_Finalize();
    return 0;
}
