/*
 * hello.c: a job that only joins and leaves (MPI_Init, MPI_Finalize), for
 * timing job start-up with the same C source under dosrun (built with
 * mpi/bin/dosmpicc) and under mpirun (built with Open MPI's mpicc).
 * ci/bench-compare.sh's start-up table uses it beside `dosbench hello`.
 */
#include <mpi.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Finalize();
    return 0;
}
