/* MPI-IO views on dosfs: vector and subarray filetypes, a noncontiguous
 * memory type, collective and independent writes; the files are read back
 * whole and compared with a serial model of where each int must land. */
#include <stdlib.h>
#include <string.h>
#include "check.h"

#define NB 7  /* blocks per rank */
#define B 50  /* ints per block */
#define ROWS 13
#define COLS 11

static int vec_model(int k, int n) {
    /* int k of the file: block k / B, written by rank blk % n as its
     * (blk / n)-th block. */
    int blk = k / B, r = blk % n, j = blk / n;
    return r * 1000000 + j * B + k % B;
}

int main(int argc, char **argv) {
    int rank, n;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_Status st;
    int count;

    /* Vector view: rank r sees blocks r, r+n, r+2n, ... of B ints. */
    /* Collective: one tile of a vector; independent: NB tiles of one block. */
    MPI_Datatype vec, block, filetypes[2];
    OK(MPI_Type_vector(NB, B, B * n, MPI_INT, &vec));
    OK(MPI_Type_create_resized(vec, 0, (MPI_Aint)NB * B * n * 4, &filetypes[0]));
    OK(MPI_Type_contiguous(B, MPI_INT, &block));
    OK(MPI_Type_create_resized(block, 0, (MPI_Aint)B * n * 4, &filetypes[1]));
    OK(MPI_Type_commit(&filetypes[0]));
    OK(MPI_Type_commit(&filetypes[1]));
    MPI_Aint extents[2] = {(MPI_Aint)NB * B * n * 4, (MPI_Aint)B * n * 4};
    int mine[NB * B];
    for (int i = 0; i < NB * B; i++) mine[i] = rank * 1000000 + i;

    const char *names[2] = {"io_views_coll", "io_views_ind"};
    for (int mode = 0; mode < 2; mode++) {
        MPI_File fh;
        OK(MPI_File_open(MPI_COMM_WORLD, names[mode], MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &fh));
        OK(MPI_File_set_view(fh, (MPI_Offset)rank * B * 4, MPI_INT, filetypes[mode], "native", MPI_INFO_NULL));
        if (mode == 0) {
            OK(MPI_File_write_at_all(fh, 0, mine, NB * B, MPI_INT, &st));
        } else {
            /* From memory every other int: a noncontiguous memory type;
             * in two independent writes, the second through the pointer. */
            int *spread = calloc(2 * NB * B, sizeof(int));
            for (int i = 0; i < NB * B; i++) spread[2 * i] = mine[i];
            MPI_Datatype every2;
            OK(MPI_Type_vector(NB * B / 2, 1, 2, MPI_INT, &every2));
            OK(MPI_Type_commit(&every2));
            OK(MPI_File_write_at(fh, 0, spread, 1, every2, &st));
            OK(MPI_Get_count(&st, every2, &count));
            CHECK(count == 1);
            OK(MPI_File_seek(fh, NB * B / 2, MPI_SEEK_SET));
            OK(MPI_File_write(fh, spread + NB * B, 1, every2, &st));
            MPI_Offset pos;
            OK(MPI_File_get_position(fh, &pos));
            CHECK(pos == NB * B);
            /* The byte of etype B of the view: the second block. */
            OK(MPI_File_get_byte_offset(fh, B, &pos));
            CHECK(pos == (MPI_Offset)(rank + n) * B * 4);
            OK(MPI_Type_free(&every2));
            free(spread);
        }
        OK(MPI_File_sync(fh));
        /* Read back through the view. */
        int back[NB * B];
        memset(back, 0, sizeof back);
        OK(MPI_File_read_at_all(fh, 0, back, NB * B, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == NB * B);
        for (int i = 0; i < NB * B; i++) CHECK(back[i] == mine[i]);
        /* The view as set. */
        MPI_Offset disp;
        MPI_Datatype et, ft;
        char rep[MPI_MAX_DATAREP_STRING];
        OK(MPI_File_get_view(fh, &disp, &et, &ft, rep));
        CHECK(disp == (MPI_Offset)rank * B * 4 && et == MPI_INT && strcmp(rep, "native") == 0);
        MPI_Aint lb, ext;
        OK(MPI_Type_get_extent(ft, &lb, &ext));
        CHECK(lb == 0 && ext == extents[mode]);
        OK(MPI_Type_free(&ft));
        /* The whole file through the default view, against the model. */
        OK(MPI_File_set_view(fh, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
        int total = NB * B * n;
        int *all = malloc(sizeof(int) * total);
        OK(MPI_File_read_at(fh, 0, all, total, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == total);
        for (int k = 0; k < total; k++) {
            if (all[k] != vec_model(k, n)) {
                fprintf(stderr, "%s: int %d is %d, expected %d\n", names[mode], k, all[k], vec_model(k, n));
                CHECK(0);
            }
        }
        free(all);
        OK(MPI_File_close(&fh));
    }
    OK(MPI_Type_free(&filetypes[0]));
    OK(MPI_Type_free(&filetypes[1]));
    OK(MPI_Type_free(&vec));
    OK(MPI_Type_free(&block));

    /* Subarray view: a ROWS x COLS*n array of ints in C order, rank r owns
     * columns [r*COLS, (r+1)*COLS). */
    int gsizes[2] = {ROWS, COLS * n}, lsizes[2] = {ROWS, COLS}, starts[2] = {0, rank * COLS};
    MPI_Datatype sub;
    OK(MPI_Type_create_subarray(2, gsizes, lsizes, starts, MPI_ORDER_C, MPI_INT, &sub));
    OK(MPI_Type_commit(&sub));
    int local[ROWS * COLS];
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < COLS; j++) local[i * COLS + j] = i * 100000 + rank * COLS + j;
    MPI_File fh;
    MPI_Info info;
    OK(MPI_Info_create(&info));
    OK(MPI_Info_set(info, "cb_nodes", "1"));
    OK(MPI_Info_set(info, "romio_cb_write", "enable"));
    OK(MPI_File_open(MPI_COMM_WORLD, "io_views_sub", MPI_MODE_RDWR | MPI_MODE_CREATE, info, &fh));
    OK(MPI_Info_free(&info));
    OK(MPI_File_set_view(fh, 0, MPI_INT, sub, "native", MPI_INFO_NULL));
    OK(MPI_File_write_all(fh, local, ROWS * COLS, MPI_INT, &st));
    OK(MPI_File_sync(fh));
    OK(MPI_File_set_view(fh, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
    int total = ROWS * COLS * n;
    int *all = malloc(sizeof(int) * total);
    OK(MPI_File_read_at_all(fh, 0, all, total, MPI_INT, &st));
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < COLS * n; j++) CHECK(all[i * COLS * n + j] == i * 100000 + j);
    free(all);
    /* Bad views. */
    MPI_Datatype three;
    OK(MPI_Type_contiguous(3, MPI_BYTE, &three));
    OK(MPI_Type_commit(&three));
    FAILS(MPI_ERR_TYPE, MPI_File_set_view(fh, 0, MPI_INT, three, "native", MPI_INFO_NULL));
    FAILS(MPI_ERR_ARG, MPI_File_set_view(fh, -5, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
    OK(MPI_Type_free(&three));
    OK(MPI_File_close(&fh));
    OK(MPI_Type_free(&sub));

    /* A rank whose filetype holds no data takes part with 0 bytes (the last
     * rank here); a bad view on one rank only fails on every rank, none
     * waits; a collective read past the end leaves the rest of the buffer. */
    {
        MPI_File f2;
        OK(MPI_File_open(MPI_COMM_WORLD, "io_views_edge", MPI_MODE_RDWR | MPI_MODE_CREATE, MPI_INFO_NULL, &f2));
        MPI_Datatype none, ft2;
        int zero = 0;
        OK(MPI_Type_indexed(0, &zero, &zero, MPI_INT, &none));
        OK(MPI_Type_commit(&none));
        int last = rank == n - 1 && n > 1;
        ft2 = last ? none : MPI_INT;
        OK(MPI_File_set_view(f2, (MPI_Offset)rank * 40, MPI_INT, ft2, "native", MPI_INFO_NULL));
        int ten[10];
        for (int i = 0; i < 10; i++) ten[i] = rank * 10 + i;
        OK(MPI_File_write_at_all(f2, 0, ten, last ? 0 : 10, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == (last ? 0 : 10));
        if (last) FAILS(MPI_ERR_IO, MPI_File_write_at(f2, 0, ten, 1, MPI_INT, &st));
        OK(MPI_File_sync(f2));
        MPI_Datatype three2;
        OK(MPI_Type_contiguous(3, MPI_BYTE, &three2));
        OK(MPI_Type_commit(&three2));
        if (rank == 0) {
            FAILS(MPI_ERR_TYPE, MPI_File_set_view(f2, 0, MPI_INT, three2, "native", MPI_INFO_NULL));
        } else {
            FAILS(MPI_ERR_IO, MPI_File_set_view(f2, 0, MPI_INT, MPI_INT, "native", MPI_INFO_NULL));
        }
        OK(MPI_Type_free(&three2));
        OK(MPI_File_set_view(f2, 0, MPI_BYTE, MPI_BYTE, "native", MPI_INFO_NULL));
        int writers = n > 1 ? n - 1 : 1;
        int big[64];
        for (int i = 0; i < 64; i++) big[i] = 99;
        /* The file has 10 ints per writer; read 10 more than that. */
        OK(MPI_File_read_at_all(f2, 0, big, writers * 10 + 10, MPI_INT, &st));
        OK(MPI_Get_count(&st, MPI_INT, &count));
        CHECK(count == writers * 10);
        for (int i = 0; i < writers * 10; i++) CHECK(big[i] == i);
        for (int i = writers * 10; i < 64; i++) CHECK(big[i] == 99);
        OK(MPI_Type_free(&none));
        OK(MPI_File_close(&f2));
    }

    report_ok("io_views");
    MPI_Finalize();
    return 0;
}
