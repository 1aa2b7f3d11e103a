/* MPI-IO on local files (ROMIO's ufs driver for dos): plain names in a job
 * without a dosfs, and `ufs:` names in any job. The patterns of MPICH's
 * io/zero_count (open the program itself read-only, a collective read of 0
 * bytes on all ranks but one) and io/simple_collective (create with
 * MPI_MODE_EXCL, POSIX unlink(), create again), then views, sizes, deletion
 * and the error classes, each checked against the file as POSIX reads it.
 * Usage: io_local nofs|withfs DIR (DIR: a local directory for the files). */
#include <string.h>
#include <unistd.h>
#include "check.h"

static char name[4096];

/* The MPI name of local path `p`: plain without a dosfs, `ufs:` with one. */
static const char *mpi_name(const char *mode, const char *p) {
    snprintf(name, sizeof name, "%s%s", strcmp(mode, "withfs") == 0 ? "ufs:" : "", p);
    return name;
}

int main(int argc, char **argv) {
    int rank, n, count;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    CHECK(argc == 3);
    const char *mode = argv[1];
    MPI_File fh;
    MPI_Status st;
    char path[4096];

    /* zero_count: the program itself, 10 bytes on rank 0, none elsewhere. */
    OK(MPI_File_open(MPI_COMM_WORLD, mpi_name(mode, argv[0]), MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
    char head[10] = {0};
    int len = rank == 0 ? 10 : 0;
    memset(&st, 1, sizeof st);
    OK(MPI_File_read_all(fh, head, len, MPI_BYTE, &st));
    OK(MPI_Get_count(&st, MPI_BYTE, &count));
    CHECK(count == len);
    if (rank == 0) CHECK(memcmp(head, "\177ELF", 4) == 0);
    MPI_Offset size;
    OK(MPI_File_get_size(fh, &size));
    CHECK(size > 1000);
    FAILS(MPI_ERR_ACCESS, MPI_File_write_at(fh, 0, head, 1, MPI_BYTE, &st));
    OK(MPI_File_close(&fh));

    /* simple_collective: create exclusively, 700 bytes per rank, unlink, again. */
    snprintf(path, sizeof path, "%s/simple.%s", argv[2], mode);
    char buf[700];
    for (int round = 0; round < 2; round++) {
        OK(MPI_File_open(MPI_COMM_WORLD, mpi_name(mode, path), MPI_MODE_CREATE | MPI_MODE_WRONLY | MPI_MODE_EXCL, MPI_INFO_NULL, &fh));
        memset(buf, 'a' + rank + round, sizeof buf);
        OK(MPI_File_write_at_all(fh, (MPI_Offset)rank * 700, buf, 700, MPI_BYTE, &st));
        OK(MPI_File_close(&fh));
        if (rank == 0) {
            FILE *f = fopen(path, "rb");
            CHECK(f != NULL);
            for (int r = 0; r < n; r++) {
                CHECK(fread(buf, 1, 700, f) == 700);
                for (int i = 0; i < 700; i++) CHECK(buf[i] == 'a' + r + round);
            }
            CHECK(fgetc(f) == EOF);
            fclose(f);
        }
        /* It exists now: another exclusive create fails on every rank. */
        FAILS(MPI_ERR_FILE_EXISTS, MPI_File_open(MPI_COMM_WORLD, mpi_name(mode, path), MPI_MODE_CREATE | MPI_MODE_WRONLY | MPI_MODE_EXCL, MPI_INFO_NULL, &fh));
        OK(MPI_Barrier(MPI_COMM_WORLD));
        if (rank == 0) CHECK(unlink(path) == 0);
        OK(MPI_Barrier(MPI_COMM_WORLD));
    }
    FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_open(MPI_COMM_WORLD, mpi_name(mode, path), MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));

    /* A vector view: rank r's ints at r, r + n, r + 2n, ...; read back whole. */
    snprintf(path, sizeof path, "%s/view.%s", argv[2], mode);
    enum { PER = 50 };
    int mine[PER], all[PER * 8];
    CHECK(n <= 8);
    MPI_Datatype vec, ft;
    OK(MPI_Type_vector(PER, 1, n, MPI_INT, &vec));
    OK(MPI_Type_create_resized(vec, 0, (MPI_Aint)PER * n * 4, &ft));
    OK(MPI_Type_commit(&ft));
    for (int i = 0; i < PER; i++) mine[i] = 1000 * rank + i;
    OK(MPI_File_open(MPI_COMM_WORLD, mpi_name(mode, path), MPI_MODE_CREATE | MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE, MPI_INFO_NULL, &fh));
    OK(MPI_File_set_view(fh, (MPI_Offset)rank * 4, MPI_INT, ft, "native", MPI_INFO_NULL));
    OK(MPI_File_write_all(fh, mine, PER, MPI_INT, &st));
    OK(MPI_File_sync(fh));
    OK(MPI_File_set_view(fh, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
    OK(MPI_File_get_size(fh, &size));
    CHECK(size == (MPI_Offset)PER * n * 4);
    OK(MPI_File_read_at_all(fh, 0, all, PER * n * 4, MPI_BYTE, &st));
    for (int i = 0; i < PER * n; i++) CHECK(all[i] == 1000 * (i % n) + i / n);
    /* A read past the end counts the bytes that were there. */
    OK(MPI_File_read_at(fh, size - 8, all, 16, MPI_BYTE, &st));
    OK(MPI_Get_count(&st, MPI_BYTE, &count));
    CHECK(count == 8);
    OK(MPI_File_set_size(fh, 12));
    OK(MPI_File_get_size(fh, &size));
    CHECK(size == 12);
    OK(MPI_File_close(&fh));
    OK(MPI_Barrier(MPI_COMM_WORLD)); /* rank 0 deletes it in the close */
    CHECK(access(path, F_OK) != 0);  /* MPI_MODE_DELETE_ON_CLOSE */
    OK(MPI_Type_free(&ft));
    OK(MPI_Type_free(&vec));

    /* File_delete of a local file. */
    if (rank == 0) {
        snprintf(path, sizeof path, "%s/gone.%s", argv[2], mode);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        fclose(f);
        OK(MPI_File_delete(mpi_name(mode, path), MPI_INFO_NULL));
        CHECK(access(path, F_OK) != 0);
        FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_delete(mpi_name(mode, path), MPI_INFO_NULL));
    }
    report_ok(mode);
    MPI_Finalize();
    return 0;
}
