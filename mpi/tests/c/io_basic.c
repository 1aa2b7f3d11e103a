/* MPI-IO on dosfs: open modes and their error classes, independent and
 * collective reads and writes, file pointers, nonblocking forms, size,
 * info, atomicity, error handlers. Run under `dosrun --fs DIR`. */
#include <string.h>
#include "check.h"

#define N 1000

int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_File fh;
    MPI_Status st;
    int count;

    /* Files return errors by default. */
    MPI_Errhandler eh;
    OK(MPI_File_get_errhandler(MPI_FILE_NULL, &eh));
    CHECK(eh == MPI_ERRORS_RETURN);

    /* Open errors. */
    FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_open(MPI_COMM_WORLD, "io_basic_missing", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_AMODE, MPI_File_open(MPI_COMM_WORLD, "x", MPI_MODE_RDONLY | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_AMODE, MPI_File_open(MPI_COMM_WORLD, "x", MPI_MODE_RDONLY | MPI_MODE_WRONLY, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_AMODE, MPI_File_open(MPI_COMM_WORLD, "x", MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_AMODE, MPI_File_open(MPI_COMM_WORLD, "x", MPI_MODE_RDWR | MPI_MODE_SEQUENTIAL, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_BAD_FILE, MPI_File_open(MPI_COMM_WORLD, "lustre:/tmp/x", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_COMM, MPI_File_open(MPI_COMM_NULL, "x", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_FILE, MPI_File_sync(MPI_FILE_NULL));
    FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_delete("io_basic_missing", MPI_INFO_NULL));

    /* Create with hints; EXCL on an existing file. */
    MPI_Info info;
    OK(MPI_Info_create(&info));
    OK(MPI_Info_set(info, "striping_unit", "65536"));
    OK(MPI_Info_set(info, "my_key", "my value"));
    OK(MPI_File_open(MPI_COMM_WORLD, "dosfs:/io_basic", MPI_MODE_RDWR | MPI_MODE_CREATE | MPI_MODE_EXCL, info, &fh));
    OK(MPI_Info_free(&info));
    MPI_File other;
    FAILS(MPI_ERR_FILE_EXISTS, MPI_File_open(MPI_COMM_WORLD, "io_basic", MPI_MODE_RDWR | MPI_MODE_CREATE | MPI_MODE_EXCL, MPI_INFO_NULL, &other));
    int amode;
    OK(MPI_File_get_amode(fh, &amode));
    CHECK(amode == (MPI_MODE_RDWR | MPI_MODE_CREATE | MPI_MODE_EXCL));
    MPI_Info used;
    char val[MPI_MAX_INFO_VAL];
    int flag;
    OK(MPI_File_get_info(fh, &used));
    OK(MPI_Info_get(used, "striping_unit", MPI_MAX_INFO_VAL - 1, val, &flag));
    CHECK(flag && strcmp(val, "65536") == 0);
    OK(MPI_Info_get(used, "my_key", MPI_MAX_INFO_VAL - 1, val, &flag));
    CHECK(flag && strcmp(val, "my value") == 0);
    OK(MPI_Info_free(&used));
    MPI_Group g;
    int gs;
    OK(MPI_File_get_group(fh, &g));
    OK(MPI_Group_size(g, &gs));
    CHECK(gs == size);
    OK(MPI_Group_free(&g));

    /* Independent: rank r writes N ints at r*N. */
    int buf[N], back[N];
    for (int i = 0; i < N; i++) buf[i] = rank * N + i;
    OK(MPI_File_write_at(fh, (MPI_Offset)rank * N * 4, buf, N, MPI_INT, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == N);
    OK(MPI_File_sync(fh));
    MPI_Offset fsize;
    OK(MPI_File_get_size(fh, &fsize));
    CHECK(fsize == (MPI_Offset)size * N * 4);
    /* Read the next rank's block. */
    int peer = (rank + 1) % size;
    OK(MPI_File_read_at(fh, (MPI_Offset)peer * N * 4, back, N, MPI_INT, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == N);
    for (int i = 0; i < N; i++) CHECK(back[i] == peer * N + i);
    /* A read at the end of the file reads what is there. */
    OK(MPI_File_read_at(fh, fsize - 8, back, N, MPI_INT, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == 2);

    /* Collective: every rank writes its block negated, reads all back. */
    for (int i = 0; i < N; i++) buf[i] = -(rank * N + i);
    OK(MPI_File_write_at_all(fh, (MPI_Offset)rank * N * 4, buf, N, MPI_INT, &st));
    OK(MPI_File_sync(fh));
    OK(MPI_File_read_at_all(fh, (MPI_Offset)peer * N * 4, back, N, MPI_INT, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == N);
    for (int i = 0; i < N; i++) CHECK(back[i] == -(peer * N + i));

    /* Nonblocking. */
    MPI_Request req[2];
    int one = 1000 + rank, got = 0;
    MPI_Offset tail = (MPI_Offset)size * N * 4;
    OK(MPI_File_iwrite_at(fh, tail + rank * 4, &one, 1, MPI_INT, &req[0]));
    OK(MPI_Wait(&req[0], &st));
    OK(MPI_File_sync(fh));
    OK(MPI_File_iread_at_all(fh, tail + peer * 4, &got, 1, MPI_INT, &req[1]));
    OK(MPI_Wait(&req[1], &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == 1 && got == 1000 + peer);
    OK(MPI_File_iwrite_at_all(fh, tail + rank * 4, &one, 1, MPI_INT, &req[0]));
    OK(MPI_File_iread_at(fh, tail + rank * 4, &got, 1, MPI_INT, &req[1]));
    OK(MPI_Waitall(2, req, MPI_STATUSES_IGNORE));

    /* Large-count forms. */
    MPI_Count big = 1;
    OK(MPI_File_write_at_c(fh, tail + rank * 4, &one, big, MPI_INT, &st));
    OK(MPI_File_sync(fh));
    got = 0;
    OK(MPI_File_read_at_all_c(fh, tail + peer * 4, &got, big, MPI_INT, &st));
    CHECK(got == 1000 + peer);
    FAILS(MPI_ERR_COUNT, MPI_File_read_at_c(fh, 0, &got, (MPI_Count)-1, MPI_INT, &st));

    /* Split collectives: one at a time per file; end without begin fails. */
    OK(MPI_File_write_at_all_begin(fh, tail + rank * 4, &one, 1, MPI_INT));
    FAILS(MPI_ERR_OTHER, MPI_File_read_all_begin(fh, &got, 1, MPI_INT));
    FAILS(MPI_ERR_OTHER, MPI_File_read_at_all_end(fh, &got, &st));
    OK(MPI_File_write_at_all_end(fh, &one, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == 1);
    FAILS(MPI_ERR_OTHER, MPI_File_write_at_all_end(fh, &one, &st));
    OK(MPI_File_sync(fh));
    got = 0;
    OK(MPI_File_read_at_all_begin(fh, tail + peer * 4, &got, 1, MPI_INT));
    OK(MPI_File_read_at_all_end(fh, &got, &st));
    CHECK(got == 1000 + peer);

    /* Individual file pointer. */
    MPI_Offset pos;
    OK(MPI_File_seek(fh, (MPI_Offset)rank * N * 4, MPI_SEEK_SET));
    OK(MPI_File_read(fh, back, 10, MPI_INT, &st));
    for (int i = 0; i < 10; i++) CHECK(back[i] == -(rank * N + i));
    OK(MPI_File_get_position(fh, &pos));
    CHECK(pos == (MPI_Offset)rank * N * 4 + 40);
    OK(MPI_File_seek(fh, -40, MPI_SEEK_CUR));
    OK(MPI_File_read_all(fh, back, 10, MPI_INT, &st));
    for (int i = 0; i < 10; i++) CHECK(back[i] == -(rank * N + i));
    OK(MPI_File_seek(fh, -4 * (MPI_Offset)size, MPI_SEEK_END));
    OK(MPI_File_get_position(fh, &pos));
    CHECK(pos == tail);
    OK(MPI_File_get_byte_offset(fh, 12, &pos));
    CHECK(pos == 12);
    FAILS(MPI_ERR_ARG, MPI_File_seek(fh, -1, MPI_SEEK_SET));
    FAILS(MPI_ERR_ARG, MPI_File_seek(fh, 0, 12345));

    /* Size: set, preallocate (never cuts). */
    OK(MPI_File_set_size(fh, 100));
    OK(MPI_File_get_size(fh, &fsize));
    CHECK(fsize == 100);
    OK(MPI_File_preallocate(fh, 50));
    OK(MPI_File_get_size(fh, &fsize));
    CHECK(fsize == 100);
    OK(MPI_File_preallocate(fh, 4096));
    OK(MPI_File_get_size(fh, &fsize));
    CHECK(fsize == 4096);

    /* Atomicity. */
    OK(MPI_File_set_atomicity(fh, 1));
    OK(MPI_File_get_atomicity(fh, &flag));
    CHECK(flag == 1);
    OK(MPI_File_write_at(fh, rank * 4, &one, 1, MPI_INT, &st));
    OK(MPI_File_set_atomicity(fh, 0));
    OK(MPI_File_get_atomicity(fh, &flag));
    CHECK(flag == 0);

    /* Bad arguments on an open file. */
    FAILS(MPI_ERR_ARG, MPI_File_read_at(fh, -1, back, 1, MPI_INT, &st));
    FAILS(MPI_ERR_COUNT, MPI_File_read_at(fh, 0, back, -1, MPI_INT, &st));
    FAILS(MPI_ERR_TYPE, MPI_File_read_at(fh, 0, back, 1, MPI_DATATYPE_NULL, &st));
    FAILS(MPI_ERR_BUFFER, MPI_File_write_at(fh, 0, NULL, 1, MPI_INT, &st));
    FAILS(MPI_ERR_UNSUPPORTED_DATAREP, MPI_File_set_view(fh, 0, MPI_INT, MPI_INT, "no_such_datarep", MPI_INFO_NULL));
    OK(MPI_File_close(&fh));
    CHECK(fh == MPI_FILE_NULL);
    FAILS(MPI_ERR_FILE, MPI_File_close(&fh));

    /* Access modes. */
    OK(MPI_File_open(MPI_COMM_WORLD, "io_basic", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_ACCESS, MPI_File_write_at(fh, 0, buf, 1, MPI_INT, &st));
    OK(MPI_File_read_at(fh, 0, back, 1, MPI_INT, &st));
    OK(MPI_File_close(&fh));
    OK(MPI_File_open(MPI_COMM_WORLD, "io_basic", MPI_MODE_WRONLY | MPI_MODE_APPEND, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_ACCESS, MPI_File_read_at(fh, 0, back, 1, MPI_INT, &st));
    OK(MPI_File_get_position(fh, &pos));
    CHECK(pos == 4096);
    OK(MPI_File_close(&fh));

    /* The error handler of a file, and the default one. */
    OK(MPI_File_open(MPI_COMM_WORLD, "io_basic", MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE, MPI_INFO_NULL, &fh));
    OK(MPI_File_set_errhandler(fh, MPI_ERRORS_ARE_FATAL));
    OK(MPI_File_get_errhandler(fh, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL);
    OK(MPI_File_set_errhandler(fh, MPI_ERRORS_RETURN));
    OK(MPI_File_close(&fh));
    /* DELETE_ON_CLOSE removed it. */
    FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_open(MPI_COMM_WORLD, "io_basic", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));

    /* File_delete. */
    OK(MPI_File_open(MPI_COMM_WORLD, "io_basic2", MPI_MODE_WRONLY | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    OK(MPI_File_close(&fh));
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) OK(MPI_File_delete("io_basic2", MPI_INFO_NULL));
    MPI_Barrier(MPI_COMM_WORLD);
    FAILS(MPI_ERR_NO_SUCH_FILE, MPI_File_open(MPI_COMM_WORLD, "io_basic2", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));

    report_ok("io_basic");
    MPI_Finalize();
    return 0;
}
