/* The cost of the C layer per call, in one process (no scheduling between
 * ranks in the measurement): MPI_Isend to MPI_PROC_NULL + MPI_Waitall (the
 * library's own work only), a message to itself (MPI_Irecv + MPI_Send +
 * MPI_Waitall), and MPI_Comm_size. Not a test: a measurement (CONFORMANCE.md).
 *   mpi/bin/dosmpicc -O2 -o callcost mpi/bench/callcost.c && dosrun -n 1 ./callcost
 *   mpicc -O2 -o callcost_ompi mpi/bench/callcost.c && mpirun -n 1 ./callcost_ompi */
#include <stdio.h>
#include <mpi.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int n = 200000, w = 64; char b[64]; MPI_Request r[64];
    for (int rep = 0; rep < 3; rep++) {
    double t0 = MPI_Wtime();
    for (int i = 0; i < n / w; i++) {
        for (int j = 0; j < w; j++) MPI_Isend(b, 1, MPI_CHAR, MPI_PROC_NULL, 1, MPI_COMM_WORLD, &r[j]);
        MPI_Waitall(w, r, MPI_STATUSES_IGNORE);
    }
    double t1 = MPI_Wtime();
    for (int i = 0; i < n / w; i++) {
        for (int j = 0; j < w; j++) MPI_Irecv(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD, &r[j]);
        for (int j = 0; j < w; j++) MPI_Send(b + j, 1, MPI_CHAR, 0, j, MPI_COMM_WORLD);
        MPI_Waitall(w, r, MPI_STATUSES_IGNORE);
    }
    double t2 = MPI_Wtime();
    for (int i = 0; i < n; i++) { int s; MPI_Comm_size(MPI_COMM_WORLD, &s); }
    double t3 = MPI_Wtime();
    printf("isend PROC_NULL + waitall: %.1f ns/msg; self irecv+send+waitall: %.1f ns/msg; Comm_size: %.1f ns\n",
           (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9, (t3 - t2) / n * 1e9);
    }
    MPI_Finalize();
}
