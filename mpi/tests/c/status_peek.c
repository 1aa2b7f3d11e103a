/* MPI-4.1's MPI_Request_get_status_any/all/some (peek without freeing)
 * and MPI_Aint_add/MPI_Aint_diff (MPICH's coll/nonblocking3 and
 * rma/aint did not link without them). */
#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);

    char buf[100];
    MPI_Aint a0, a1;
    MPI_Get_address(&buf[0], &a0);
    MPI_Get_address(&buf[42], &a1);
    CHECK(MPI_Aint_diff(a1, a0) == 42);
    CHECK(MPI_Aint_add(a0, 42) == a1);

    /* A receive from myself not yet matched, then matched. */
    int x = -1, y = 7, index = -5, flag = -5, outcount = -5, idx[3];
    MPI_Request r[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    MPI_Status st, sts[3];
    /* Only null requests: "no active request". */
    OK(MPI_Request_get_status_any(3, r, &index, &flag, &st));
    CHECK(flag == 1 && index == MPI_UNDEFINED);
    OK(MPI_Request_get_status_some(3, r, &outcount, idx, sts));
    CHECK(outcount == MPI_UNDEFINED);
    OK(MPI_Request_get_status_all(3, r, &flag, sts));
    CHECK(flag == 1);

    OK(MPI_Irecv(&x, 1, MPI_INT, rank, 5, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Request_get_status_any(3, r, &index, &flag, &st));
    CHECK(flag == 0 && index == MPI_UNDEFINED);
    OK(MPI_Request_get_status_all(3, r, &flag, sts));
    CHECK(flag == 0);
    OK(MPI_Request_get_status_some(3, r, &outcount, idx, sts));
    CHECK(outcount == 0);
    OK(MPI_Send(&y, 1, MPI_INT, rank, 5, MPI_COMM_WORLD));
    do {
        OK(MPI_Request_get_status_any(3, r, &index, &flag, &st));
    } while (!flag);
    CHECK(index == 1 && st.MPI_SOURCE == rank && st.MPI_TAG == 5);
    /* Not freed: still there, and complete for all and some. */
    CHECK(r[1] != MPI_REQUEST_NULL);
    OK(MPI_Request_get_status_all(3, r, &flag, sts));
    CHECK(flag == 1 && sts[1].MPI_TAG == 5);
    OK(MPI_Request_get_status_some(3, r, &outcount, idx, sts));
    CHECK(outcount == 1 && idx[0] == 1 && sts[0].MPI_TAG == 5);
    OK(MPI_Wait(&r[1], MPI_STATUS_IGNORE));
    CHECK(x == 7 && r[1] == MPI_REQUEST_NULL);
    report_ok("status_peek");
    MPI_Finalize();
    return 0;
}
