/* cpi-shaped MPICH test program for dosrun --mpi pmi1 (launcher/tests/mpich.rs).
 *
 * Computes pi by the midpoint rule: rank 0 broadcasts the number of
 * intervals (MPI_Bcast), each rank sums its share, MPI_Reduce adds them up.
 * Rank 0 prints "pi is approximately P, error E" and "ranks N"; every rank
 * prints "rank R of N on HOST".
 *
 *   cpi                 compute and exit 0
 *   cpi exit R CODE     rank R exits with CODE after the reduction
 *   cpi abort R CODE    rank R calls MPI_Abort(MPI_COMM_WORLD, CODE)
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int rank, size, len, n = 0;
    char host[MPI_MAX_PROCESSOR_NAME];
    const double PI25DT = 3.141592653589793238462643;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(host, &len);
    printf("rank %d of %d on %s\n", rank, size, host);
    fflush(stdout);

    if (rank == 0)
        n = 100000;
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    double h = 1.0 / (double)n, sum = 0.0, mypi, pi;
    for (int i = rank + 1; i <= n; i += size) {
        double x = h * ((double)i - 0.5);
        sum += 4.0 / (1.0 + x * x);
    }
    mypi = h * sum;
    MPI_Reduce(&mypi, &pi, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("pi is approximately %.16f, error %.16f\n", pi, fabs(pi - PI25DT));
        printf("ranks %d\n", size);
        fflush(stdout);
    }
    if (argc == 4 && atoi(argv[2]) == rank) {
        int code = atoi(argv[3]);
        if (strcmp(argv[1], "exit") == 0)
            exit(code);
        if (strcmp(argv[1], "abort") == 0)
            MPI_Abort(MPI_COMM_WORLD, code);
    }
    MPI_Finalize();
    return 0;
}
