/* MPI_Comm_split_type with different split types on different ranks
 * (MPI_COMM_TYPE_SHARED on even ranks, MPI_UNDEFINED or a hardware type on
 * odd ones): every rank returns, the even ones with their host's
 * communicator. */
#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int odd_types[2] = {MPI_UNDEFINED, MPI_COMM_TYPE_HW_GUIDED};
    for (int round = 0; round < 2; round++) {
        MPI_Comm c;
        int t = rank % 2 == 0 ? MPI_COMM_TYPE_SHARED : odd_types[round];
        OK(MPI_Comm_split_type(MPI_COMM_WORLD, t, 0, MPI_INFO_NULL, &c));
        if (rank % 2) {
            CHECK(c == MPI_COMM_NULL);
        } else {
            int n = -1;
            CHECK(c != MPI_COMM_NULL);
            OK(MPI_Comm_size(c, &n));
            /* One host: the even ranks. */
            CHECK(n == (size + 1) / 2);
            OK(MPI_Comm_free(&c));
        }
    }
    MPI_Comm c;
    FAILS(MPI_ERR_ARG, MPI_Comm_split_type(MPI_COMM_WORLD, 12345, 0, MPI_INFO_NULL, &c));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    report_ok("split_type_mixed");
    MPI_Finalize();
    return 0;
}
