/* Instructions per call of the C layer's point-to-point path, for callgrind
 * (deterministic: the machine's load does not enter). One rank sends to
 * itself: 200 windows of 64 MPI_Irecv + MPI_Send + MPI_Waitall, then 200 of
 * 64 MPI_Irecv + (MPI_Isend + MPI_Wait) + MPI_Waitall. Run with
 * mpi/bench/callgrind.sh (BENCHMARKS.md, "The C layer's hot path"). */
#include <stdio.h>
#include <mpi.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int n = 64 * 200, w = 64; char b[64]; MPI_Request r[64];
    for (int i = 0; i < n / w; i++) {
        for (int j = 0; j < w; j++) MPI_Irecv(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD, &r[j]);
        for (int j = 0; j < w; j++) MPI_Send(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD);
        MPI_Waitall(w, r, MPI_STATUSES_IGNORE);
    }
    for (int i = 0; i < n / w; i++) {
        for (int j = 0; j < w; j++) MPI_Irecv(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD, &r[j]);
        for (int j = 0; j < w; j++) { MPI_Request s; MPI_Isend(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD, &s); MPI_Wait(&s, MPI_STATUS_IGNORE); }
        MPI_Waitall(w, r, MPI_STATUSES_IGNORE);
    }
    MPI_Finalize();
    return 0;
}
