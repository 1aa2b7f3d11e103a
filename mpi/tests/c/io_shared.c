/* MPI-IO shared file pointers on dosfs: write_shared from every rank (each
 * record lands once, none overlap), write_ordered (rank order), seek_shared,
 * get_position_shared, read_ordered, read_shared. */
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define R 8 /* records per rank */
#define L 16 /* ints per record */

int main(int argc, char **argv) {
    int rank, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_File fh;
    MPI_Status st;
    int count;
    OK(MPI_File_open(MPI_COMM_WORLD, "io_shared", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
    OK(MPI_File_set_view(fh, 0, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));

    /* Every rank appends R records through the shared pointer. */
    int rec[L];
    for (int j = 0; j < R; j++) {
        for (int i = 0; i < L; i++) rec[i] = (rank * R + j) * 1000 + i;
        if (j % 2 == 0) {
            OK(MPI_File_write_shared(fh, rec, L, MPI_INT, &st));
        } else {
            MPI_Request q;
            OK(MPI_File_iwrite_shared(fh, rec, L, MPI_INT, &q));
            OK(MPI_Wait(&q, &st));
        }
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == L);
    }
    OK(MPI_File_sync(fh));
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Offset pos;
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == (MPI_Offset)n * R * L);
    /* Each record is whole and each appears once. */
    int total = n * R * L;
    int *all = malloc(sizeof(int) * total);
    char *seen = calloc(n * R, 1);
    OK(MPI_File_read_at(fh, 0, all, total, MPI_INT, &st));
    for (int k = 0; k < n * R; k++) {
        int id = all[k * L] / 1000;
        CHECK(id >= 0 && id < n * R && !seen[id]);
        seen[id] = 1;
        for (int i = 0; i < L; i++) CHECK(all[k * L + i] == id * 1000 + i);
    }

    /* Ordered: rank r writes r+1 ints after the shared records, in rank order. */
    int mine[64];
    for (int i = 0; i <= rank; i++) mine[i] = 7000000 + rank * 100 + i;
    OK(MPI_File_write_ordered(fh, mine, rank + 1, MPI_INT, &st));
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == (MPI_Offset)total + n * (n + 1) / 2);
    OK(MPI_File_sync(fh));
    /* Read them back in order, from the start of that region. */
    OK(MPI_File_seek_shared(fh, total, MPI_SEEK_SET));
    int back[64];
    OK(MPI_File_read_ordered(fh, back, rank + 1, MPI_INT, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == rank + 1);
    for (int i = 0; i <= rank; i++) CHECK(back[i] == 7000000 + rank * 100 + i);
    /* Seek relative to the end and to the current position. */
    OK(MPI_File_seek_shared(fh, -(MPI_Offset)(n * (n + 1) / 2), MPI_SEEK_END));
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == total);
    OK(MPI_File_seek_shared(fh, -total, MPI_SEEK_CUR));
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == 0);
    FAILS(MPI_ERR_ARG, MPI_File_seek_shared(fh, -1, MPI_SEEK_SET));
    /* read_shared from rank 0 only: the first record. */
    if (rank == 0) {
        OK(MPI_File_read_shared(fh, rec, L, MPI_INT, &st));
        CHECK(rec[0] == all[0]);
        OK(MPI_File_get_position_shared(fh, &pos));
        CHECK(pos == L);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    /* set_view resets it. */
    OK(MPI_File_set_view(fh, 0, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == 0);
    OK(MPI_File_close(&fh));
    free(all);
    free(seen);

    /* Sequential mode: append with write_shared, then a view from the
     * current position (MPI_DISPLACEMENT_CURRENT). */
    OK(MPI_File_open(MPI_COMM_WORLD, "io_shared_seq", MPI_MODE_WRONLY | MPI_MODE_CREATE | MPI_MODE_SEQUENTIAL, MPI_INFO_NULL, &fh));
    OK(MPI_File_write_ordered(fh, mine, 2, MPI_INT, &st));
    OK(MPI_File_set_view(fh, MPI_DISPLACEMENT_CURRENT, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    MPI_Offset disp;
    MPI_Datatype et, ft;
    char rep[MPI_MAX_DATAREP_STRING];
    OK(MPI_File_get_view(fh, &disp, &et, &ft, rep));
    CHECK(disp == (MPI_Offset)n * 2 * 4);
    OK(MPI_File_close(&fh));
    OK(MPI_File_open(MPI_COMM_WORLD, "io_shared_seq", MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_ARG, MPI_File_set_view(fh, MPI_DISPLACEMENT_CURRENT, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    OK(MPI_File_close(&fh));

    /* Read-only: a shared write is MPI_ERR_ACCESS and moves nothing. */
    OK(MPI_File_open(MPI_COMM_WORLD, "io_shared", MPI_MODE_RDONLY | MPI_MODE_DELETE_ON_CLOSE, MPI_INFO_NULL, &fh));
    FAILS(MPI_ERR_ACCESS, MPI_File_write_shared(fh, rec, 1, MPI_INT, &st));
    OK(MPI_File_get_position_shared(fh, &pos));
    CHECK(pos == 0);
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_File_close(&fh));

    report_ok("io_shared");
    MPI_Finalize();
    return 0;
}
