/* Under the default MPI_ERRORS_ARE_FATAL, a bad rank on the last rank ends
 * the job: dosrun reports that rank as failed. (The others wait in a barrier.) */
#include "check.h"

int main(int argc, char **argv) {
    int rank, size, x = 1;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    if (rank == size - 1) MPI_Send(&x, 1, MPI_INT, size + 10, 0, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    printf("fatal: not reached\n");
    MPI_Finalize();
    return 0;
}
