/* A datatype of more pieces than dos lists (a vector of 2^30 - 1 blocks,
 * as MPICH's large_count): its size, extents and element counts are exact,
 * MPI_Type_size is MPI_UNDEFINED beyond an int, types built on it (resized,
 * struct) keep exact numbers, and moving data with it is MPI_ERR_COUNT
 * under MPI_ERRORS_RETURN, not a crash or an allocation of gigabytes. */
#include <limits.h>
#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);

    MPI_Datatype four, big, rsz, st;
    OK(MPI_Type_contiguous(4, MPI_INT, &four));
    OK(MPI_Type_commit(&four));
    /* INT_MAX/2 blocks of one four-int element, every third element. */
    OK(MPI_Type_vector(INT_MAX / 2, 1, 3, four, &big));
    OK(MPI_Type_commit(&big));
    MPI_Count n = INT_MAX / 2;
    int size = 0;
    OK(MPI_Type_size(big, &size));
    CHECK(size == MPI_UNDEFINED);
    MPI_Count size_x = 0, lb = -1, extent = 0;
    OK(MPI_Type_size_x(big, &size_x));
    CHECK(size_x == n * 16);
    OK(MPI_Type_get_extent_x(big, &lb, &extent));
    CHECK(lb == 0 && extent == (n - 1) * 48 + 16);
    OK(MPI_Type_get_true_extent_x(big, &lb, &extent));
    CHECK(lb == 0 && extent == (n - 1) * 48 + 16);

    /* Elements: 4n ints are one whole element of it. */
    MPI_Status st_;
    MPI_Count elems = 0, count = 0;
    OK(MPI_Status_set_elements_x(&st_, big, 4 * n));
    OK(MPI_Get_elements_x(&st_, big, &elems));
    CHECK(elems == 4 * n);
    OK(MPI_Get_count_c(&st_, big, &count));
    CHECK(count == 1);

    /* Resized and inside a struct: still exact. */
    OK(MPI_Type_create_resized(big, INT_MAX, -1024, &rsz));
    OK(MPI_Type_commit(&rsz));
    OK(MPI_Type_get_extent_x(rsz, &lb, &extent));
    CHECK(lb == INT_MAX && extent == -1024);
    OK(MPI_Type_size_x(rsz, &size_x));
    CHECK(size_x == n * 16);
    int lens[2] = {1, 1};
    MPI_Aint displs[2] = {0, 64};
    MPI_Datatype types[2] = {big, MPI_INT};
    OK(MPI_Type_create_struct(2, lens, displs, types, &st));
    OK(MPI_Type_commit(&st));
    OK(MPI_Type_size_x(st, &size_x));
    CHECK(size_x == n * 16 + 4);

    /* Data movement with it is refused. */
    int buf[4] = {0};
    char packed[64];
    int pos = 0;
    FAILS(MPI_ERR_COUNT, MPI_Pack(buf, 1, big, packed, sizeof packed, &pos, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Send(buf, 1, big, 0, 0, MPI_COMM_SELF));
    /* Zero of them moves nothing and passes. */
    OK(MPI_Sendrecv(buf, 0, big, 0, 1, buf, 0, big, 0, 1, MPI_COMM_SELF, MPI_STATUS_IGNORE));

    OK(MPI_Type_free(&st));
    OK(MPI_Type_free(&rsz));
    OK(MPI_Type_free(&big));
    OK(MPI_Type_free(&four));
    report_ok("types_unlisted");
    MPI_Finalize();
    return 0;
}
