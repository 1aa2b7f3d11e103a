/* The completion fast paths of Wait, Test and Waitall (requests completed
 * already are completed in one visit to the library's state) against the
 * general path: statuses per index, null handles, mixed completed and pending
 * requests, PROC_NULL receives, a status seen by Request_get_status first,
 * and a truncated receive's error in Waitall. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int rank, size;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Status st, sts[16];
    MPI_Request r[16];
    int flag;

    /* Wait and Test on requests that completed before the call. */
    int a = -1, b = 7 + rank;
    OK(MPI_Irecv(&a, 1, MPI_INT, prev, 1, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Isend(&b, 1, MPI_INT, next, 1, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    do {
        OK(MPI_Request_get_status(r[0], &flag, &st));
    } while (!flag);
    CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 1);
    /* get_status stored the outcome: Wait returns the same status. */
    memset(&st, 0xff, sizeof st);
    OK(MPI_Wait(&r[0], &st));
    CHECK(a == 7 + prev && st.MPI_SOURCE == prev && st.MPI_TAG == 1 && r[0] == MPI_REQUEST_NULL);
    int n = -1;
    OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == 1);
    flag = 0;
    while (!flag) OK(MPI_Test(&r[1], &flag, &st));
    CHECK(r[1] == MPI_REQUEST_NULL);

    /* A PROC_NULL receive: complete at once, with the PROC_NULL status. */
    OK(MPI_Irecv(&a, 1, MPI_INT, MPI_PROC_NULL, 3, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Wait(&r[0], &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG && r[0] == MPI_REQUEST_NULL);
    OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == 0);

    /* Waitall over: sends (completed), receives whose messages arrived
     * (completed), receives still pending (their sends go after the
     * barrier), null handles, PROC_NULL receives, in a mixed order. */
    int in[16], out[16];
    for (int i = 0; i < 16; i++) in[i] = -1, out[i] = rank * 100 + i;
    for (int i = 0; i < 16; i++) {
        switch (i % 4) {
        case 0: OK(MPI_Isend(&out[i], 1, MPI_INT, next, 10 + i, MPI_COMM_WORLD, &r[i])); break;
        case 1: OK(MPI_Irecv(&in[i], 1, MPI_INT, prev, 10 + i - 1, MPI_COMM_WORLD, &r[i])); break;
        case 2: r[i] = MPI_REQUEST_NULL; break;
        case 3: OK(MPI_Irecv(&in[i], 1, MPI_INT, i == 7 ? MPI_PROC_NULL : prev, 50 + i, MPI_COMM_WORLD, &r[i])); break;
        }
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    for (int i = 3; i < 16; i += 4)
        if (i != 7) OK(MPI_Send(&out[i], 1, MPI_INT, next, 50 + i, MPI_COMM_WORLD));
    memset(sts, 0xff, sizeof sts);
    OK(MPI_Waitall(16, r, sts));
    for (int i = 0; i < 16; i++) {
        CHECK(r[i] == MPI_REQUEST_NULL);
        switch (i % 4) {
        case 1: CHECK(in[i] == prev * 100 + i - 1 && sts[i].MPI_SOURCE == prev && sts[i].MPI_TAG == 10 + i - 1); break;
        case 2: CHECK(sts[i].MPI_SOURCE == MPI_ANY_SOURCE && sts[i].MPI_TAG == MPI_ANY_TAG); break;
        case 3:
            if (i == 7) CHECK(in[i] == -1 && sts[i].MPI_SOURCE == MPI_PROC_NULL);
            else CHECK(in[i] == prev * 100 + i && sts[i].MPI_SOURCE == prev && sts[i].MPI_TAG == 50 + i);
            break;
        }
    }

    /* A truncated receive that completed before Waitall: MPI_ERR_IN_STATUS,
     * its status says MPI_ERR_TRUNCATE, the send's says MPI_SUCCESS. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int two[2] = {1, 2}, one = -1;
    OK(MPI_Irecv(&one, 1, MPI_INT, prev, 90, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Isend(two, 2, MPI_INT, next, 90, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    do {
        OK(MPI_Request_get_status(r[0], &flag, MPI_STATUS_IGNORE));
    } while (!flag);
    sts[0].MPI_ERROR = sts[1].MPI_ERROR = -1;
    FAILS(MPI_ERR_IN_STATUS, MPI_Waitall(2, r, sts));
    int c0 = -1;
    MPI_Error_class(sts[0].MPI_ERROR, &c0);
    CHECK(c0 == MPI_ERR_TRUNCATE && r[0] == MPI_REQUEST_NULL && r[1] == MPI_REQUEST_NULL);
    CHECK(sts[1].MPI_ERROR == MPI_SUCCESS);

    /* An invalid handle among valid ones: MPI_ERR_REQUEST, nothing taken. */
    OK(MPI_Irecv(&a, 1, MPI_INT, MPI_PROC_NULL, 4, MPI_COMM_WORLD, &r[0]));
    r[1] = (MPI_Request)(MPI_Aint)0x12345;
    FAILS(MPI_ERR_REQUEST, MPI_Waitall(2, r, sts));
    CHECK(r[0] != MPI_REQUEST_NULL);
    FAILS(MPI_ERR_REQUEST, MPI_Wait(&r[1], &st));
    OK(MPI_Wait(&r[0], &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL);

    report_ok("fastpath");
    OK(MPI_Finalize());
    return 0;
}
