/* File views whose filetype overlaps itself (MPICH's tst_fileview): the
 * standard forbids overlapping filetypes only on files opened for writing.
 * On a file opened read-write MPI_File_set_view refuses them (MPI_ERR_IO,
 * as ROMIO); on one opened read-only it takes them, and a read through the
 * view returns the overlapped bytes twice, in the filetype's order.
 * Decreasing displacements stay an error either way. Any number of ranks. */
#include "check.h"

#define N 12

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    /* ints 0..3 and int 1 again: bytes 0..12 and 4..8 of each tile. */
    int blen[2] = {3, 1}, disp[2] = {0, 1};
    MPI_Datatype over, dec;
    OK(MPI_Type_indexed(2, blen, disp, MPI_INT, &over));
    OK(MPI_Type_commit(&over));
    int dlen[2] = {1, 1}, ddisp[2] = {3, 0};
    OK(MPI_Type_indexed(2, dlen, ddisp, MPI_INT, &dec));
    OK(MPI_Type_commit(&dec));

    MPI_File fh;
    OK(MPI_File_open(MPI_COMM_WORLD, "io_view_overlap", MPI_MODE_RDWR | MPI_MODE_CREATE,
                     MPI_INFO_NULL, &fh));
    if (rank == 0) {
        int v[N];
        for (int i = 0; i < N; i++) v[i] = 100 + i;
        OK(MPI_File_write_at(fh, 0, v, N, MPI_INT, MPI_STATUS_IGNORE));
    }
    FAILS(MPI_ERR_IO, MPI_File_set_view(fh, 0, MPI_INT, over, "native", MPI_INFO_NULL));
    FAILS(MPI_ERR_IO, MPI_File_set_view(fh, 0, over, over, "native", MPI_INFO_NULL));
    FAILS(MPI_ERR_IO, MPI_File_set_view(fh, 0, MPI_INT, dec, "native", MPI_INFO_NULL));
    OK(MPI_File_close(&fh));

    OK(MPI_File_open(MPI_COMM_WORLD, "io_view_overlap", MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_IO, MPI_File_set_view(fh, 0, MPI_INT, dec, "native", MPI_INFO_NULL));
    OK(MPI_File_set_view(fh, 0, over, over, "native", MPI_INFO_NULL));
    OK(MPI_File_set_view(fh, 0, MPI_INT, over, "native", MPI_INFO_NULL));
    /* Two tiles (extent 3 ints): 100 101 102 101, 103 104 105 104. */
    int got[8] = {0}, want[8] = {100, 101, 102, 101, 103, 104, 105, 104};
    MPI_Status st;
    OK(MPI_File_read_at_all(fh, 0, got, 8, MPI_INT, &st));
    int cnt = -1;
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    CHECK(cnt == 8);
    for (int i = 0; i < 8; i++) CHECK(got[i] == want[i]);
    /* Independent, from the second element of the stream on. */
    int got2[3] = {0};
    OK(MPI_File_read_at(fh, 3, got2, 3, MPI_INT, MPI_STATUS_IGNORE));
    CHECK(got2[0] == 101 && got2[1] == 103 && got2[2] == 104);
    OK(MPI_File_close(&fh));

    OK(MPI_Type_free(&over));
    OK(MPI_Type_free(&dec));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) OK(MPI_File_delete("io_view_overlap", MPI_INFO_NULL));
    report_ok("io_view_overlap");
    MPI_Finalize();
    return 0;
}
