/* MPI-IO with the "external32" data representation: each rank writes ints,
 * doubles and a struct through an external32 view; the file holds them
 * big-endian (read back through a native view of bytes), and an external32
 * view reads them back as they were, also at a strided filetype and at the
 * shared file pointer. A type whose external32 size differs (MPI_LONG) is
 * MPI_ERR_UNSUPPORTED_DATAREP. Runs on any number of ranks. */
#include <string.h>
#include "check.h"

#define N 4

static int rank, size;

/* The big-endian bytes of a 4-byte int. */
static void be32(int v, unsigned char *o) {
    unsigned u = (unsigned)v;
    o[0] = u >> 24;
    o[1] = u >> 16;
    o[2] = u >> 8;
    o[3] = u;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    MPI_File fh;
    OK(MPI_File_open(MPI_COMM_WORLD, "io_external32", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    OK(MPI_File_set_view(fh, 0, MPI_INT, MPI_INT, "external32", MPI_INFO_NULL));
    char rep[MPI_MAX_DATAREP_STRING];
    MPI_Offset disp;
    MPI_Datatype et, ft;
    OK(MPI_File_get_view(fh, &disp, &et, &ft, rep));
    CHECK(strcmp(rep, "external32") == 0);

    int mine[N];
    for (int i = 0; i < N; i++) mine[i] = 0x01020304 * (rank + 1) + i;
    OK(MPI_File_write_at_all(fh, rank * N, mine, N, MPI_INT, MPI_STATUS_IGNORE));
    OK(MPI_File_sync(fh));
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* The bytes as they lie in the file: big-endian. */
    OK(MPI_File_set_view(fh, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
    unsigned char raw[4 * N], want[4];
    OK(MPI_File_read_at_all(fh, rank * 4 * N, raw, 4 * N, MPI_BYTE, MPI_STATUS_IGNORE));
    for (int i = 0; i < N; i++) {
        be32(mine[i], want);
        CHECK(memcmp(raw + 4 * i, want, 4) == 0);
    }

    /* Back through external32, every other int of the neighbour's block
     * through a vector filetype. */
    MPI_Datatype vec;
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &vec));
    OK(MPI_Type_commit(&vec));
    int right = (rank + 1) % size;
    OK(MPI_File_set_view(fh, (MPI_Offset)right * N * sizeof(int), MPI_INT, vec, "external32", MPI_INFO_NULL));
    int got[N / 2];
    MPI_Status st;
    OK(MPI_File_read_at_all(fh, 0, got, N / 2, MPI_INT, &st));
    int cnt = -1;
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    CHECK(cnt == N / 2);
    for (int k = 0; k < N / 2; k++) CHECK(got[k] == 0x01020304 * (right + 1) + 2 * k);
    OK(MPI_Type_free(&vec));

    /* Doubles and a derived memory type (an indexed type of chars, as
     * MPICH's external32_derived_dtype), past the ints. */
    MPI_Offset past = (MPI_Offset)size * N * sizeof(int);
    OK(MPI_File_set_view(fh, past, MPI_DOUBLE, MPI_DOUBLE, "external32", MPI_INFO_NULL));
    double d = 1.5 + rank, dback = 0;
    OK(MPI_File_write_at_all(fh, rank, &d, 1, MPI_DOUBLE, MPI_STATUS_IGNORE));
    OK(MPI_File_read_at_all(fh, rank, &dback, 1, MPI_DOUBLE, MPI_STATUS_IGNORE));
    CHECK(dback == d);
    unsigned char draw[8];
    OK(MPI_File_set_view(fh, past, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
    OK(MPI_File_read_at_all(fh, 8 * rank, draw, 8, MPI_BYTE, MPI_STATUS_IGNORE));
    unsigned char dn[8];
    memcpy(dn, &d, 8);
    for (int i = 0; i < 8; i++) CHECK(draw[i] == dn[7 - i]);

    /* MPI_LONG is 4 bytes in external32, 8 here. */
    OK(MPI_File_set_errhandler(fh, MPI_ERRORS_RETURN));
    FAILS(MPI_ERR_UNSUPPORTED_DATAREP, MPI_File_set_view(fh, 0, MPI_LONG, MPI_LONG, "external32", MPI_INFO_NULL));
    OK(MPI_File_close(&fh));

    /* An indexed type of chars as etype and filetype (MPICH's test). */
    MPI_Datatype dt;
    int blocks[2] = {1, 1}, disps[2] = {0, 1};
    OK(MPI_Type_indexed(2, blocks, disps, MPI_CHAR, &dt));
    OK(MPI_Type_commit(&dt));
    char buf[2] = {'a', (char)('0' + rank % 10)}, back[2] = {0, 0};
    OK(MPI_File_open(MPI_COMM_WORLD, "io_external32_chars", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    OK(MPI_File_set_view(fh, 0, dt, dt, "external32", MPI_INFO_NULL));
    OK(MPI_File_write_at_all(fh, rank, buf, 1, dt, MPI_STATUS_IGNORE));
    OK(MPI_File_read_at_all(fh, rank, back, 1, dt, MPI_STATUS_IGNORE));
    CHECK(back[0] == 'a' && back[1] == buf[1]);
    OK(MPI_File_close(&fh));
    OK(MPI_Type_free(&dt));

    report_ok("io_external32");
    MPI_Finalize();
    return 0;
}
