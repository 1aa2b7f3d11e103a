/* Instructions per call of the blocking calls OSU's latency and allreduce
 * loops make, for callgrind (deterministic: the machine's load does not
 * enter). One rank: 100000 MPI_Send + MPI_Recv of 1 byte to itself, then
 * 100000 MPI_Allreduce of N floats (argv[1], default 1) with MPI_SUM. Run
 * with mpi/bench/callgrind.sh; the same operations of dos itself
 * (dos::Comm::send, recv, allreduce) show in the same profile. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    char b = 1, c = 0; float x[256] = {1}, y[256];
    for (int i = 0; i < 100000; i++) {
        MPI_Send(&b, 1, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
        MPI_Recv(&c, 1, MPI_CHAR, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    int n = argc > 1 ? atoi(argv[1]) : 1;
    if (n < 1 || n > 256) n = 1;
    for (int i = 0; i < 100000; i++) MPI_Allreduce(x, y, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (c != 1 || y[0] != 1.0f) { printf("wrong result\n"); return 1; }
    MPI_Finalize();
    return 0;
}
