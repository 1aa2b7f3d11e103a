/* Generalized requests: incomplete until MPI_Grequest_complete, then
 * completed by every Wait/Test form with the query function's status; the
 * free function runs once, at completion; bad arguments. */
#include "check.h"

static int freed = 0;

static int query_fn(void *extra, MPI_Status *st) {
    int v = *(int *) extra;
    MPI_Status_set_source(st, v);
    MPI_Status_set_tag(st, v + 1);
    MPI_Status_set_cancelled(st, 0);
    MPI_Status_set_elements(st, MPI_INT, v % 7);
    return MPI_SUCCESS;
}

static int free_fn(void *extra) {
    (void) extra;
    freed++;
    return MPI_SUCCESS;
}

static int cancel_fn(void *extra, int complete) {
    (void) extra;
    (void) complete;
    return MPI_SUCCESS;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int extra[3] = {rank + 10, rank + 20, rank + 30};
    MPI_Request r[3];
    MPI_Status st;
    int flag = 1;

    OK(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &extra[0], &r[0]));
    OK(MPI_Test(&r[0], &flag, &st));
    CHECK(!flag && r[0] != MPI_REQUEST_NULL && freed == 0);
    OK(MPI_Request_get_status(r[0], &flag, &st));
    CHECK(!flag);
    /* Active: cannot be freed (the free function must run at completion). */
    FAILS(MPI_ERR_UNSUPPORTED_OPERATION, MPI_Request_free(&r[0]));
    OK(MPI_Grequest_complete(r[0]));
    FAILS(MPI_ERR_REQUEST, MPI_Grequest_complete(r[0]));
    OK(MPI_Wait(&r[0], &st));
    CHECK(r[0] == MPI_REQUEST_NULL && freed == 1);
    CHECK(st.MPI_SOURCE == rank + 10 && st.MPI_TAG == rank + 11);
    int cnt = -1;
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    CHECK(cnt == (rank + 10) % 7);

    /* Mixed with point-to-point in one Waitall; completed in reverse order. */
    int x = rank, y = -1;
    OK(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &extra[1], &r[0]));
    OK(MPI_Irecv(&y, 1, MPI_INT, rank, 5, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &extra[2], &r[2]));
    OK(MPI_Send(&x, 1, MPI_INT, rank, 5, MPI_COMM_WORLD));
    int idx = -1;
    OK(MPI_Waitany(3, r, &idx, &st));
    CHECK(idx == 1 && y == rank);
    OK(MPI_Grequest_complete(r[2]));
    OK(MPI_Grequest_complete(r[0]));
    MPI_Status sts[3];
    OK(MPI_Waitall(3, r, sts));
    CHECK(freed == 3);
    CHECK(sts[0].MPI_SOURCE == rank + 20 && sts[2].MPI_SOURCE == rank + 30);
    CHECK(sts[2].MPI_TAG == rank + 31);

    /* A completed one may be freed: the free function runs. */
    OK(MPI_Grequest_start(query_fn, free_fn, cancel_fn, &extra[0], &r[0]));
    OK(MPI_Grequest_complete(r[0]));
    OK(MPI_Request_free(&r[0]));
    CHECK(freed == 4);

    FAILS(MPI_ERR_ARG, MPI_Grequest_start(query_fn, free_fn, cancel_fn, NULL, NULL));
    FAILS(MPI_ERR_ARG, MPI_Grequest_start(NULL, free_fn, cancel_fn, NULL, &r[0]));
    FAILS(MPI_ERR_REQUEST, MPI_Grequest_complete(MPI_REQUEST_NULL));
    MPI_Barrier(MPI_COMM_WORLD);
    report_ok("greq");
    MPI_Finalize();
    return 0;
}
