/* Nonblocking point-to-point and every Wait and Test form. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int rank, size;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    MPI_Status st, sts[8];
    MPI_Request r[8];

    /* Waitall over receives from every rank and sends to every rank. */
    int *in = calloc(size, sizeof(int)), *out = malloc(size * sizeof(int));
    MPI_Request *rs = malloc(2 * size * sizeof(MPI_Request));
    MPI_Status *ss = malloc(2 * size * sizeof(MPI_Status));
    for (int i = 0; i < size; i++) {
        out[i] = rank * 1000 + i;
        OK(MPI_Irecv(&in[i], 1, MPI_INT, i, 1, MPI_COMM_WORLD, &rs[i]));
    }
    for (int i = 0; i < size; i++) OK(MPI_Isend(&out[i], 1, MPI_INT, i, 1, MPI_COMM_WORLD, &rs[size + i]));
    OK(MPI_Waitall(2 * size, rs, ss));
    for (int i = 0; i < size; i++) {
        CHECK(in[i] == i * 1000 + rank);
        CHECK(ss[i].MPI_SOURCE == i && ss[i].MPI_TAG == 1);
        CHECK(rs[i] == MPI_REQUEST_NULL && rs[size + i] == MPI_REQUEST_NULL);
    }
    /* Waitall with MPI_STATUSES_IGNORE and null requests. */
    OK(MPI_Waitall(2 * size, rs, MPI_STATUSES_IGNORE));

    /* Test spins until the message arrives. */
    int a = -1, b = rank;
    OK(MPI_Irecv(&a, 1, MPI_INT, prev, 2, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Issend(&b, 1, MPI_INT, next, 2, MPI_COMM_WORLD, &r[1]));
    int flag = 0;
    while (!flag) OK(MPI_Test(&r[0], &flag, &st));
    CHECK(a == prev && st.MPI_SOURCE == prev && r[0] == MPI_REQUEST_NULL);
    OK(MPI_Wait(&r[1], &st));
    /* Test on a null request: complete, empty status. */
    OK(MPI_Test(&r[0], &flag, &st));
    CHECK(flag == 1 && st.MPI_SOURCE == MPI_ANY_SOURCE && st.MPI_TAG == MPI_ANY_TAG);

    /* Waitany and Testany: three receives, completed in the order the sends go. */
    int v[3] = {-1, -1, -1};
    for (int i = 0; i < 3; i++) OK(MPI_Irecv(&v[i], 1, MPI_INT, prev, 10 + i, MPI_COMM_WORLD, &r[i]));
    int idx = -1;
    OK(MPI_Testany(3, r, &idx, &flag, &st));
    if (size > 1) CHECK(flag == 0 && idx == MPI_UNDEFINED);
    OK(MPI_Barrier(MPI_COMM_WORLD)); /* no rank sends before every rank tested */
    for (int i = 2; i >= 0; i--) {
        int x = 100 + i;
        OK(MPI_Send(&x, 1, MPI_INT, next, 10 + i, MPI_COMM_WORLD));
    }
    int done = 0;
    while (done < 3) {
        OK(MPI_Waitany(3, r, &idx, &st));
        CHECK(idx >= 0 && idx < 3 && st.MPI_TAG == 10 + idx && v[idx] == 100 + idx);
        CHECK(r[idx] == MPI_REQUEST_NULL);
        done++;
    }
    OK(MPI_Waitany(3, r, &idx, &st));
    CHECK(idx == MPI_UNDEFINED);
    OK(MPI_Testany(3, r, &idx, &flag, &st));
    CHECK(flag == 1 && idx == MPI_UNDEFINED);

    /* Waitsome and Testsome. */
    for (int i = 0; i < 4; i++) OK(MPI_Irecv(&in[0] + 0, 0, MPI_INT, prev, 20 + i, MPI_COMM_WORLD, &r[i]));
    int outcount = -1, idxs[8];
    OK(MPI_Testsome(4, r, &outcount, idxs, sts));
    if (size > 1) CHECK(outcount == 0);
    OK(MPI_Barrier(MPI_COMM_WORLD));
    for (int i = 0; i < 4; i++) OK(MPI_Send(NULL, 0, MPI_INT, next, 20 + i, MPI_COMM_WORLD));
    int total = 0;
    while (total < 4) {
        OK(MPI_Waitsome(4, r, &outcount, idxs, sts));
        CHECK(outcount >= 1);
        for (int k = 0; k < outcount; k++) CHECK(sts[k].MPI_TAG == 20 + idxs[k] && r[idxs[k]] == MPI_REQUEST_NULL);
        total += outcount;
    }
    OK(MPI_Waitsome(4, r, &outcount, idxs, sts));
    CHECK(outcount == MPI_UNDEFINED);

    /* Testall: false until every request is done. */
    int c1 = -1, c2 = -1;
    OK(MPI_Irecv(&c1, 1, MPI_INT, prev, 30, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Irecv(&c2, 1, MPI_INT, prev, 31, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Send(&rank, 1, MPI_INT, next, 30, MPI_COMM_WORLD));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Testall(2, r, &flag, sts));
    if (size > 1) CHECK(flag == 0 && r[0] != MPI_REQUEST_NULL);
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Send(&rank, 1, MPI_INT, next, 31, MPI_COMM_WORLD));
    flag = 0;
    while (!flag) OK(MPI_Testall(2, r, &flag, sts));
    CHECK(c1 == prev && c2 == prev && sts[1].MPI_TAG == 31);

    /* Request_get_status does not free; Request_free lets a send complete alone. */
    int g = -1;
    OK(MPI_Irecv(&g, 1, MPI_INT, prev, 40, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Isend(&rank, 1, MPI_INT, next, 40, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Request_free(&r[1]));
    CHECK(r[1] == MPI_REQUEST_NULL);
    flag = 0;
    while (!flag) OK(MPI_Request_get_status(r[0], &flag, &st));
    CHECK(st.MPI_SOURCE == prev && r[0] != MPI_REQUEST_NULL);
    OK(MPI_Wait(&r[0], &st));
    CHECK(g == prev && st.MPI_SOURCE == prev && st.MPI_TAG == 40);

    /* Nonblocking receive from PROC_NULL. */
    OK(MPI_Irecv(&g, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Wait(&r[0], &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL);

    /* Ibsend completes at once. */
    OK(MPI_Ibsend(&rank, 1, MPI_INT, next, 50, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Wait(&r[0], MPI_STATUS_IGNORE));
    OK(MPI_Recv(&g, 1, MPI_INT, prev, 50, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(g == prev);

    /* A truncated nonblocking receive: the error in Wait and in Waitall's status. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int big[4] = {1, 2, 3, 4}, small[2];
    OK(MPI_Irecv(small, 2, MPI_INT, rank, 60, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Send(big, 4, MPI_INT, rank, 60, MPI_COMM_WORLD));
    CHECK(MPI_Wait(&r[0], &st) == MPI_ERR_TRUNCATE);
    OK(MPI_Irecv(small, 2, MPI_INT, rank, 61, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Irecv(&g, 1, MPI_INT, rank, 62, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Send(big, 4, MPI_INT, rank, 61, MPI_COMM_WORLD));
    OK(MPI_Send(big, 1, MPI_INT, rank, 62, MPI_COMM_WORLD));
    CHECK(MPI_Waitall(2, r, sts) == MPI_ERR_IN_STATUS);
    CHECK(sts[0].MPI_ERROR == MPI_ERR_TRUNCATE && sts[1].MPI_ERROR == MPI_SUCCESS);

    /* A receive freed while active and never matched does not hold up MPI_Finalize. */
    static int never;
    OK(MPI_Irecv(&never, 1, MPI_INT, rank, 999, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Request_free(&r[0]));

    free(in);
    free(out);
    free(rs);
    free(ss);
    OK(MPI_Barrier(MPI_COMM_WORLD));
    report_ok("nb");
    OK(MPI_Finalize());
    return 0;
}
