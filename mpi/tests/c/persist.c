/* Persistent requests (Send_init in the modes, Recv_init, Start, Startall,
 * every Wait/Test form on them, Request_free), matched probes (Mprobe,
 * Improbe, Mrecv, Imrecv), Cancel of a receive and Test_cancelled. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int rank, size, flag, idx, cnt;
    MPI_Status st;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;

    /* A ring, ten rounds on the same two persistent requests. */
    int out_v, in_v = -1;
    MPI_Request q[2];
    OK(MPI_Recv_init(&in_v, 1, MPI_INT, prev, 3, MPI_COMM_WORLD, &q[0]));
    OK(MPI_Send_init(&out_v, 1, MPI_INT, next, 3, MPI_COMM_WORLD, &q[1]));
    MPI_Request keep0 = q[0], keep1 = q[1];
    for (int round = 0; round < 10; round++) {
        out_v = rank * 100 + round;
        OK(MPI_Startall(2, q));
        switch (round % 5) {
        case 0:
            OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
            break;
        case 1:
            OK(MPI_Wait(&q[0], &st));
            CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 3);
            OK(MPI_Wait(&q[1], MPI_STATUS_IGNORE));
            break;
        case 2:
            do OK(MPI_Testall(2, q, &flag, MPI_STATUSES_IGNORE)); while (!flag);
            break;
        case 3:
            for (int k = 0; k < 2; k++) OK(MPI_Waitany(2, q, &idx, MPI_STATUS_IGNORE));
            /* Both inactive now: like null requests. */
            OK(MPI_Waitany(2, q, &idx, MPI_STATUS_IGNORE));
            CHECK(idx == MPI_UNDEFINED);
            break;
        default: {
            int done = 0, ind[2];
            while (done < 2) {
                OK(MPI_Waitsome(2, q, &cnt, ind, MPI_STATUSES_IGNORE));
                CHECK(cnt != MPI_UNDEFINED);
                done += cnt;
            }
            OK(MPI_Testsome(2, q, &cnt, ind, MPI_STATUSES_IGNORE));
            CHECK(cnt == MPI_UNDEFINED);
        }
        }
        /* The handles stay. */
        CHECK(q[0] == keep0 && q[1] == keep1);
        CHECK(in_v == prev * 100 + round);
    }
    /* Waiting on an inactive one returns at once with an empty status. */
    OK(MPI_Wait(&q[0], &st));
    CHECK(q[0] == keep0 && st.MPI_SOURCE == MPI_ANY_SOURCE && st.MPI_TAG == MPI_ANY_TAG);
    OK(MPI_Test(&q[0], &flag, MPI_STATUS_IGNORE));
    CHECK(flag);
    OK(MPI_Request_get_status(q[0], &flag, MPI_STATUS_IGNORE));
    CHECK(flag);
    /* Starting an active request again is an error. */
    OK(MPI_Start(&q[0]));
    FAILS(MPI_ERR_REQUEST, MPI_Start(&q[0]));
    OK(MPI_Start(&q[1]));
    OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
    OK(MPI_Request_free(&q[0]));
    OK(MPI_Request_free(&q[1]));
    CHECK(q[0] == MPI_REQUEST_NULL && q[1] == MPI_REQUEST_NULL);
    FAILS(MPI_ERR_REQUEST, MPI_Start(&keep0));

    /* Synchronous and buffered persistent sends to self. */
    int a = 7, b = 0;
    MPI_Request s, r;
    OK(MPI_Ssend_init(&a, 1, MPI_INT, rank, 4, MPI_COMM_WORLD, &s));
    OK(MPI_Recv_init(&b, 1, MPI_INT, MPI_ANY_SOURCE, 4, MPI_COMM_WORLD, &r));
    OK(MPI_Start(&s));
    OK(MPI_Start(&r));
    OK(MPI_Wait(&r, &st));
    OK(MPI_Wait(&s, MPI_STATUS_IGNORE));
    CHECK(b == 7 && st.MPI_SOURCE == rank && st.MPI_TAG == 4);
    OK(MPI_Request_free(&s));
    OK(MPI_Request_free(&r));
    /* Bad arguments at init. */
    FAILS(MPI_ERR_RANK, MPI_Send_init(&a, 1, MPI_INT, size, 0, MPI_COMM_WORLD, &s));
    FAILS(MPI_ERR_TAG, MPI_Recv_init(&b, 1, MPI_INT, 0, -5, MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_COUNT, MPI_Send_init(&a, -1, MPI_INT, 0, 0, MPI_COMM_WORLD, &s));

    /* Matched probes: each rank sends two messages to the next. */
    int m1[3] = {rank, 1, 2}, m2 = rank + 1000;
    MPI_Request sq[2];
    OK(MPI_Isend(m1, 3, MPI_INT, next, 5, MPI_COMM_WORLD, &sq[0]));
    OK(MPI_Isend(&m2, 1, MPI_INT, next, 6, MPI_COMM_WORLD, &sq[1]));
    MPI_Message msg;
    OK(MPI_Mprobe(prev, 5, MPI_COMM_WORLD, &msg, &st));
    CHECK(msg != MPI_MESSAGE_NULL && st.MPI_SOURCE == prev && st.MPI_TAG == 5);
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    CHECK(cnt == 3);
    /* The matched message is out of the queue: a probe for tag 5 finds nothing. */
    OK(MPI_Iprobe(prev, 5, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE));
    CHECK(!flag);
    int got[3] = {0};
    OK(MPI_Mrecv(got, 3, MPI_INT, &msg, &st));
    CHECK(msg == MPI_MESSAGE_NULL && got[0] == prev && got[2] == 2);
    MPI_Message m;
    do OK(MPI_Improbe(MPI_ANY_SOURCE, 6, MPI_COMM_WORLD, &flag, &m, &st)); while (!flag);
    int g2 = 0;
    MPI_Request rq;
    OK(MPI_Imrecv(&g2, 1, MPI_INT, &m, &rq));
    OK(MPI_Wait(&rq, &st));
    CHECK(g2 == prev + 1000 && st.MPI_SOURCE == prev && st.MPI_TAG == 6);
    OK(MPI_Waitall(2, sq, MPI_STATUSES_IGNORE));
    OK(MPI_Mprobe(MPI_PROC_NULL, 0, MPI_COMM_WORLD, &m, &st));
    CHECK(m == MPI_MESSAGE_NO_PROC && st.MPI_SOURCE == MPI_PROC_NULL);
    OK(MPI_Mrecv(NULL, 0, MPI_INT, &m, &st));
    CHECK(m == MPI_MESSAGE_NULL);
    FAILS(MPI_ERR_REQUEST, MPI_Mrecv(got, 3, MPI_INT, &m, &st));

    /* Cancel: a receive nobody sends to is cancelled. */
    int never = 0;
    OK(MPI_Irecv(&never, 1, MPI_INT, prev, 77, MPI_COMM_WORLD, &rq));
    OK(MPI_Cancel(&rq));
    OK(MPI_Wait(&rq, &st));
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(flag);
    /* A persistent receive, cancelled while active, becomes inactive. */
    OK(MPI_Recv_init(&never, 1, MPI_INT, prev, 78, MPI_COMM_WORLD, &r));
    OK(MPI_Start(&r));
    OK(MPI_Cancel(&r));
    OK(MPI_Wait(&r, &st));
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(flag && r != MPI_REQUEST_NULL);
    OK(MPI_Request_free(&r));
    /* A completed receive is not cancelled. */
    int one = 1, x = 0;
    OK(MPI_Irecv(&x, 1, MPI_INT, rank, 79, MPI_COMM_WORLD, &rq));
    OK(MPI_Send(&one, 1, MPI_INT, rank, 79, MPI_COMM_WORLD));
    OK(MPI_Cancel(&rq));
    OK(MPI_Wait(&rq, &st));
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(!flag && x == 1);
    /* A send is not cancelled: it completes normally. */
    OK(MPI_Isend(&one, 1, MPI_INT, rank, 80, MPI_COMM_WORLD, &rq));
    OK(MPI_Cancel(&rq));
    OK(MPI_Recv(&x, 1, MPI_INT, rank, 80, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    OK(MPI_Wait(&rq, &st));
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(!flag);
    FAILS(MPI_ERR_REQUEST, MPI_Cancel(&rq));

    OK(MPI_Barrier(MPI_COMM_WORLD));
    report_ok("persist");
    OK(MPI_Finalize());
    return 0;
}
