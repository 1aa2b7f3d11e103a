/* A dynamic window with one array attached as two halves: puts, gets and
 * accumulates that cross the seam between the halves reach both (they are
 * one range of attached memory), and a range running past the second half
 * is MPI_ERR_RMA_RANGE under MPI_ERRORS_RETURN. Runs on any number of
 * ranks. */
#include "check.h"

#define HALF 64

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    int *mem = calloc(2 * HALF, sizeof(int));
    MPI_Win win;
    OK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    OK(MPI_Win_attach(win, mem, HALF * sizeof(int)));
    OK(MPI_Win_attach(win, mem + HALF, HALF * sizeof(int)));
    MPI_Aint mine, *addrs = malloc(size * sizeof(MPI_Aint));
    OK(MPI_Get_address(mem, &mine));
    OK(MPI_Allgather(&mine, 1, MPI_AINT, addrs, 1, MPI_AINT, MPI_COMM_WORLD));

    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    int src[HALF];
    for (int i = 0; i < HALF; i++) src[i] = 1000 * rank + i;
    /* Ints HALF/2 .. 3*HALF/2 of the right neighbour: across the seam. */
    MPI_Aint at = addrs[right] + (HALF / 2) * sizeof(int);
    OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, right, 0, win));
    OK(MPI_Put(src, HALF, MPI_INT, right, at, HALF, MPI_INT, win));
    OK(MPI_Win_flush(right, win));
    OK(MPI_Accumulate(src, HALF, MPI_INT, right, at, HALF, MPI_INT, MPI_SUM, win));
    OK(MPI_Win_flush(right, win));
    int back[HALF];
    OK(MPI_Get(back, HALF, MPI_INT, right, at, HALF, MPI_INT, win));
    OK(MPI_Win_unlock(right, win));
    for (int i = 0; i < HALF; i++) CHECK(back[i] == 2 * (1000 * rank + i));
    /* Past the end of the second half. */
    OK(MPI_Win_lock(MPI_LOCK_SHARED, right, 0, win));
    FAILS(MPI_ERR_RMA_RANGE, MPI_Put(src, HALF, MPI_INT, right, addrs[right] + (HALF + HALF / 2 + 1) * sizeof(int), HALF, MPI_INT, win));
    OK(MPI_Win_unlock(right, win));

    OK(MPI_Barrier(MPI_COMM_WORLD));
    for (int i = 0; i < HALF; i++) CHECK(mem[HALF / 2 + i] == 2 * (1000 * left + i));
    OK(MPI_Win_detach(win, mem));
    OK(MPI_Win_detach(win, mem + HALF));
    OK(MPI_Win_free(&win));
    free(mem);
    free(addrs);
    report_ok("rma_dynamic_seam");
    MPI_Finalize();
    return 0;
}
