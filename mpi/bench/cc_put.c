/* Instructions per MPI_Put + MPI_Win_flush (8 bytes, to itself, in a
 * passive-target epoch of an MPI_Win_allocate window), for callgrind: 2 x
 * 100000 pairs. Run with mpi/bench/callgrind.sh. */
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    char *mem; MPI_Win win; char b[8] = {0};
    MPI_Win_allocate(4096, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win);
    MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win);
    for (int i = 0; i < 100000; i++) { MPI_Put(b, 8, MPI_CHAR, 0, 0, 8, MPI_CHAR, win); MPI_Win_flush(0, win); }
    double t = MPI_Wtime();
    for (int i = 0; i < 100000; i++) { MPI_Put(b, 8, MPI_CHAR, 0, 0, 8, MPI_CHAR, win); MPI_Win_flush(0, win); }
    printf("%.4f us\n", (MPI_Wtime() - t) * 1e6 / 100000);
    MPI_Win_unlock(0, win);
    MPI_Win_free(&win);
    MPI_Finalize();
    return 0;
}
