/* The MPI-4 point-to-point functions: MPI_Isendrecv(_replace) with dense and
 * noncontiguous types and MPI_PROC_NULL, the large-count _c forms, buffered
 * sends bounded by the attached buffer with MPI_Buffer_flush/iflush,
 * MPI_DATATYPE_NULL with MPI_PROC_NULL, the status setters and getters, and
 * the MPI_ERROR field left alone by the functions that complete one
 * operation; MPI_Mrecv/MPI_Imrecv of a noncontiguous type; persistent
 * requests whose derived type is freed after their init. */
#include <string.h>
#include "check.h"

#define N 64

static void ring(int *rank, int *size, int *next, int *prev) {
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    *next = (*rank + 1) % *size;
    *prev = (*rank + *size - 1) % *size;
}

static void isendrecv(void) {
    int rank, size, next, prev;
    ring(&rank, &size, &next, &prev);
    int out[N], in[N];
    for (int i = 0; i < N; i++) {
        out[i] = rank * 1000 + i;
        in[i] = -1;
    }
    MPI_Request r;
    MPI_Status st;
    OK(MPI_Isendrecv(out, N, MPI_INT, next, 7, in, N, MPI_INT, prev, 7, MPI_COMM_WORLD, &r));
    int flag = 0;
    while (!flag) OK(MPI_Test(&r, &flag, &st));
    CHECK(r == MPI_REQUEST_NULL);
    CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 7);
    int cnt = -1;
    OK(MPI_Get_count(&st, MPI_INT, &cnt));
    CHECK(cnt == N);
    for (int i = 0; i < N; i++) CHECK(in[i] == prev * 1000 + i);

    /* A noncontiguous type on both sides: every other int. */
    MPI_Datatype every2;
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &every2));
    OK(MPI_Type_commit(&every2));
    for (int i = 0; i < N; i++) in[i] = -1;
    OK(MPI_Isendrecv(out, 1, every2, next, 8, in, 1, every2, prev, 8, MPI_COMM_WORLD, &r));
    OK(MPI_Wait(&r, &st));
    for (int i = 0; i < N; i++)
        CHECK(in[i] == (i % 2 == 0 ? prev * 1000 + i : -1));

    /* Replace, noncontiguous: the odd slots keep their values. */
    for (int i = 0; i < N; i++) in[i] = rank * 1000 + i;
    OK(MPI_Isendrecv_replace(in, 1, every2, next, 9, prev, 9, MPI_COMM_WORLD, &r));
    OK(MPI_Wait(&r, &st));
    CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 9);
    for (int i = 0; i < N; i++)
        CHECK(in[i] == (i % 2 == 0 ? prev * 1000 + i : rank * 1000 + i));
    OK(MPI_Type_free(&every2));

    /* Replace, dense, large count form. */
    for (int i = 0; i < N; i++) in[i] = rank;
    OK(MPI_Isendrecv_replace_c(in, (MPI_Count) N, MPI_INT, next, 10, prev, 10, MPI_COMM_WORLD,
                               &r));
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    for (int i = 0; i < N; i++) CHECK(in[i] == prev);

    /* MPI_PROC_NULL on both sides, and with MPI_DATATYPE_NULL. */
    OK(MPI_Isendrecv(out, N, MPI_INT, MPI_PROC_NULL, 1, in, N, MPI_INT, MPI_PROC_NULL, 1,
                     MPI_COMM_WORLD, &r));
    OK(MPI_Wait(&r, &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);
    OK(MPI_Isendrecv(NULL, 0, MPI_DATATYPE_NULL, MPI_PROC_NULL, 1, NULL, 0, MPI_DATATYPE_NULL,
                     MPI_PROC_NULL, 1, MPI_COMM_WORLD, &r));
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    /* Send to MPI_PROC_NULL, receive for real (and the other way round). */
    in[0] = -1;
    OK(MPI_Isendrecv(out, 1, MPI_INT, MPI_PROC_NULL, 2, in, 1, MPI_INT, rank, 2, MPI_COMM_WORLD,
                     &r));
    OK(MPI_Send(&rank, 1, MPI_INT, rank, 2, MPI_COMM_WORLD));
    OK(MPI_Wait(&r, &st));
    CHECK(in[0] == rank && st.MPI_SOURCE == rank);

    /* Bad arguments, nothing started. */
    FAILS(MPI_ERR_RANK, MPI_Isendrecv(out, 1, MPI_INT, size, 1, in, 1, MPI_INT, prev, 1,
                                      MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_RANK, MPI_Isendrecv(out, 1, MPI_INT, next, 1, in, 1, MPI_INT, -5, 1,
                                      MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_TAG, MPI_Isendrecv(out, 1, MPI_INT, next, -1, in, 1, MPI_INT, prev, 1,
                                     MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_COUNT, MPI_Isendrecv(out, -1, MPI_INT, next, 1, in, 1, MPI_INT, prev, 1,
                                       MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_TYPE, MPI_Isendrecv(out, 1, MPI_DATATYPE_NULL, next, 1, in, 1, MPI_INT, prev,
                                      1, MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_BUFFER, MPI_Isendrecv(out, 1, MPI_INT, next, 1, NULL, 1, MPI_INT, prev, 1,
                                        MPI_COMM_WORLD, &r));
    FAILS(MPI_ERR_COMM, MPI_Isendrecv(out, 1, MPI_INT, next, 1, in, 1, MPI_INT, prev, 1,
                                      MPI_COMM_NULL, &r));
    FAILS(MPI_ERR_ARG, MPI_Isendrecv(out, 1, MPI_INT, next, 1, in, 1, MPI_INT, prev, 1,
                                     MPI_COMM_WORLD, NULL));
    FAILS(MPI_ERR_COUNT, MPI_Isendrecv_replace_c(in, -1, MPI_INT, next, 1, prev, 1,
                                                 MPI_COMM_WORLD, &r));
}

static void large_count_forms(void) {
    int rank, size, next, prev;
    ring(&rank, &size, &next, &prev);
    double out[N], in[N];
    for (int i = 0; i < N; i++) out[i] = rank + i / 100.0;
    MPI_Status st;
    MPI_Request r[2];
    /* Blocking, through Sendrecv_c and the Send_c/Recv_c pair in ring order. */
    OK(MPI_Sendrecv_c(out, (MPI_Count) N, MPI_DOUBLE, next, 3, in, (MPI_Count) N, MPI_DOUBLE,
                      prev, 3, MPI_COMM_WORLD, &st));
    MPI_Count cnt = -1;
    OK(MPI_Get_count_c(&st, MPI_DOUBLE, &cnt));
    CHECK(cnt == N && in[N - 1] == prev + (N - 1) / 100.0);
    if (rank == 0) {
        OK(MPI_Send_c(out, (MPI_Count) N, MPI_DOUBLE, next, 4, MPI_COMM_WORLD));
        OK(MPI_Recv_c(in, (MPI_Count) N, MPI_DOUBLE, prev, 4, MPI_COMM_WORLD, &st));
    } else {
        OK(MPI_Recv_c(in, (MPI_Count) N, MPI_DOUBLE, prev, 4, MPI_COMM_WORLD, &st));
        OK(MPI_Ssend_c(out, (MPI_Count) N, MPI_DOUBLE, next, 4, MPI_COMM_WORLD));
    }
    CHECK(st.MPI_SOURCE == prev && in[1] == prev + 0.01);
    OK(MPI_Irecv_c(in, (MPI_Count) N, MPI_DOUBLE, prev, 5, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Isend_c(out, (MPI_Count) N, MPI_DOUBLE, next, 5, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Waitall(2, r, MPI_STATUSES_IGNORE));
    CHECK(in[2] == prev + 0.02);
    for (int i = 0; i < N; i++) in[i] = rank;
    OK(MPI_Sendrecv_replace_c(in, (MPI_Count) N, MPI_DOUBLE, next, 6, prev, 6, MPI_COMM_WORLD,
                              MPI_STATUS_IGNORE));
    CHECK(in[N - 1] == prev);
    FAILS(MPI_ERR_COUNT, MPI_Send_c(out, (MPI_Count) -1, MPI_DOUBLE, next, 4, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Recv_c(in, (MPI_Count) -1, MPI_DOUBLE, prev, 4, MPI_COMM_WORLD,
                                    MPI_STATUS_IGNORE));
    /* A count over INT_MAX reaches the size checks (a null buffer for it). */
    FAILS(MPI_ERR_BUFFER, MPI_Send_c(NULL, (MPI_Count) 3000000000LL, MPI_BYTE, next, 4,
                                     MPI_COMM_WORLD));
}

static void proc_null_with_datatype_null(void) {
    MPI_Status st;
    MPI_Request r;
    OK(MPI_Irecv(NULL, 0, MPI_DATATYPE_NULL, MPI_PROC_NULL, 10, MPI_COMM_WORLD, &r));
    OK(MPI_Waitall(1, &r, &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);
    OK(MPI_Recv(NULL, 0, MPI_DATATYPE_NULL, MPI_PROC_NULL, 10, MPI_COMM_WORLD, &st));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG);
    OK(MPI_Send(NULL, 0, MPI_DATATYPE_NULL, MPI_PROC_NULL, 10, MPI_COMM_WORLD));
    OK(MPI_Isend(NULL, 0, MPI_DATATYPE_NULL, MPI_PROC_NULL, 10, MPI_COMM_WORLD, &r));
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    /* Still a bad datatype with a real peer. */
    FAILS(MPI_ERR_TYPE, MPI_Send(NULL, 0, MPI_DATATYPE_NULL, 0, 10, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE,
          MPI_Recv(NULL, 0, MPI_DATATYPE_NULL, 0, 10, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
}

#define BIG 100000

static void bounded_buffer(void) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    static char a[BIG], b[BIG], got[BIG];
    memset(a, 1, BIG);
    memset(b, 2, BIG);
    int bufsize = MPI_BSEND_OVERHEAD + BIG;
    char *buf = malloc(bufsize);
    OK(MPI_Buffer_attach(buf, bufsize));
    FAILS(MPI_ERR_BUFFER, MPI_Buffer_attach(buf, bufsize));
    /* Rendezvous-sized sends to self: pending until received. */
    OK(MPI_Bsend(a, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_BUFFER, MPI_Bsend(b, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD));
    MPI_Request r;
    FAILS(MPI_ERR_BUFFER, MPI_Ibsend(b, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD, &r));
    /* A small one fits in neither. */
    FAILS(MPI_ERR_BUFFER, MPI_Bsend(b, 1, MPI_BYTE, rank, 0, MPI_COMM_WORLD));
    OK(MPI_Buffer_iflush(&r));
    CHECK(r != MPI_REQUEST_NULL);
    /* The flush holds the buffer until it completes. */
    FAILS(MPI_ERR_BUFFER, MPI_Bsend(b, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD));
    OK(MPI_Recv(got, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[0] == 1 && got[BIG - 1] == 1);
    OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    OK(MPI_Bsend(b, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD));
    OK(MPI_Recv(got, BIG, MPI_BYTE, rank, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[0] == 2 && got[BIG - 1] == 2);
    OK(MPI_Buffer_flush());
    /* An iflush with nothing pending is complete at once. */
    OK(MPI_Buffer_iflush(&r));
    int flag = 0;
    OK(MPI_Test(&r, &flag, MPI_STATUS_IGNORE));
    CHECK(flag);
    void *addr = NULL;
    int sz = 0;
    OK(MPI_Buffer_detach(&addr, &sz));
    CHECK(addr == buf && sz == bufsize);
    free(buf);
    /* MPI_BUFFER_AUTOMATIC: no bound. */
    OK(MPI_Buffer_attach(MPI_BUFFER_AUTOMATIC, 0));
    OK(MPI_Bsend(a, BIG, MPI_BYTE, rank, 1, MPI_COMM_WORLD));
    OK(MPI_Bsend(b, BIG, MPI_BYTE, rank, 1, MPI_COMM_WORLD));
    OK(MPI_Recv(got, BIG, MPI_BYTE, rank, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[0] == 1);
    OK(MPI_Recv(got, BIG, MPI_BYTE, rank, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[0] == 2);
    MPI_Count szc = -1;
    OK(MPI_Buffer_detach_c(&addr, &szc));
    CHECK(addr == MPI_BUFFER_AUTOMATIC && szc == 0);
    FAILS(MPI_ERR_ARG, MPI_Buffer_attach_c(a, -1));
    FAILS(MPI_ERR_ARG, MPI_Buffer_iflush(NULL));
}

static void statuses(void) {
    int rank, size, next, prev;
    ring(&rank, &size, &next, &prev);
    MPI_Status st;
    memset(&st, 0, sizeof st);
    OK(MPI_Status_set_source(&st, 3));
    OK(MPI_Status_set_tag(&st, 44));
    OK(MPI_Status_set_error(&st, MPI_ERR_OTHER));
    OK(MPI_Status_set_cancelled(&st, 1));
    int v = -1, flag = 0;
    OK(MPI_Status_get_source(&st, &v));
    CHECK(v == 3 && st.MPI_SOURCE == 3);
    OK(MPI_Status_get_tag(&st, &v));
    CHECK(v == 44);
    OK(MPI_Status_get_error(&st, &v));
    CHECK(v == MPI_ERR_OTHER);
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(flag == 1);
    OK(MPI_Status_set_cancelled(&st, 0));
    OK(MPI_Test_cancelled(&st, &flag));
    CHECK(flag == 0);
    FAILS(MPI_ERR_ARG, MPI_Status_set_source(NULL, 1));
    FAILS(MPI_ERR_ARG, MPI_Status_get_tag(&st, NULL));

    /* A function that completes one operation leaves MPI_ERROR alone. */
    int x = rank, y = -1;
    MPI_Status s1, s2;
    s1.MPI_ERROR = MPI_ERR_DIMS;
    s2.MPI_ERROR = MPI_ERR_TOPOLOGY;
    MPI_Request r;
    OK(MPI_Irecv(&y, 1, MPI_INT, prev, 20, MPI_COMM_WORLD, &r));
    OK(MPI_Send(&x, 1, MPI_INT, next, 20, MPI_COMM_WORLD));
    OK(MPI_Wait(&r, &s1));
    CHECK(s1.MPI_ERROR == MPI_ERR_DIMS && s1.MPI_SOURCE == prev && y == prev);
    OK(MPI_Sendrecv(&x, 1, MPI_INT, next, 21, &y, 1, MPI_INT, prev, 21, MPI_COMM_WORLD, &s2));
    CHECK(s2.MPI_ERROR == MPI_ERR_TOPOLOGY && s2.MPI_TAG == 21);
    OK(MPI_Send(&x, 1, MPI_INT, rank, 22, MPI_COMM_WORLD));
    OK(MPI_Probe(rank, 22, MPI_COMM_WORLD, &s1));
    CHECK(s1.MPI_ERROR == MPI_ERR_DIMS && s1.MPI_TAG == 22);
    OK(MPI_Recv(&y, 1, MPI_INT, rank, 22, MPI_COMM_WORLD, &s2));
    CHECK(s2.MPI_ERROR == MPI_ERR_TOPOLOGY && s2.MPI_SOURCE == rank);
}

static void matched_noncontiguous(void) {
    int rank, size, next, prev;
    ring(&rank, &size, &next, &prev);
    int out[N], in[N];
    for (int i = 0; i < N; i++) out[i] = rank * 1000 + i;
    MPI_Datatype every2;
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &every2));
    OK(MPI_Type_commit(&every2));
    MPI_Request r;
    MPI_Message m;
    MPI_Status st;
    for (int round = 0; round < 4; round++) {
        OK(MPI_Isend(out, N / 2, MPI_INT, next, 30 + round, MPI_COMM_WORLD, &r));
        for (int i = 0; i < N; i++) in[i] = -1;
        st.MPI_ERROR = MPI_ERR_DIMS;
        OK(MPI_Mprobe(prev, 30 + round, MPI_COMM_WORLD, &m, &st));
        CHECK(st.MPI_ERROR == MPI_ERR_DIMS && st.MPI_SOURCE == prev);
        if (round == 0) {
            OK(MPI_Mrecv(in, 1, every2, &m, &st));
        } else if (round == 1) {
            MPI_Request q;
            OK(MPI_Imrecv(in, 1, every2, &m, &q));
            OK(MPI_Wait(&q, &st));
        } else if (round == 2) {
            OK(MPI_Mrecv_c(in, (MPI_Count) 1, every2, &m, &st));
        } else {
            MPI_Request q;
            OK(MPI_Imrecv_c(in, (MPI_Count) 1, every2, &m, &q));
            OK(MPI_Wait(&q, &st));
        }
        CHECK(m == MPI_MESSAGE_NULL && st.MPI_ERROR == MPI_ERR_DIMS && st.MPI_TAG == 30 + round);
        for (int i = 0; i < N; i++)
            CHECK(in[i] == (i % 2 == 0 ? prev * 1000 + i / 2 : -1));
        OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
    }
    m = MPI_MESSAGE_NULL;
    FAILS(MPI_ERR_COUNT, MPI_Mrecv_c(in, (MPI_Count) -1, MPI_INT, &m, &st));
    OK(MPI_Type_free(&every2));
}

/* A persistent request keeps using a derived type freed after its init. */
static void persistent_keeps_its_type(void) {
    int rank, size, next, prev;
    ring(&rank, &size, &next, &prev);
    MPI_Datatype dup, every2;
    OK(MPI_Type_dup(MPI_INT, &dup));
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &every2));
    OK(MPI_Type_commit(&every2));
    int v = -1, w = rank, out[N], in[N];
    for (int i = 0; i < N; i++) out[i] = rank * 1000 + i;
    MPI_Request r[4];
    OK(MPI_Recv_init(&v, 1, dup, prev, 40, MPI_COMM_WORLD, &r[0]));
    OK(MPI_Send_init(&w, 1, dup, next, 40, MPI_COMM_WORLD, &r[1]));
    OK(MPI_Recv_init(in, 1, every2, prev, 41, MPI_COMM_WORLD, &r[2]));
    OK(MPI_Send_init(out, 1, every2, next, 41, MPI_COMM_WORLD, &r[3]));
    OK(MPI_Type_free(&dup));
    OK(MPI_Type_free(&every2));
    for (int round = 0; round < 3; round++) {
        v = -1;
        for (int i = 0; i < N; i++) in[i] = -1;
        OK(MPI_Startall(4, r));
        OK(MPI_Waitall(4, r, MPI_STATUSES_IGNORE));
        CHECK(v == prev);
        for (int i = 0; i < N; i++)
            CHECK(in[i] == (i % 2 == 0 ? prev * 1000 + i : -1));
    }
    for (int i = 0; i < 4; i++) OK(MPI_Request_free(&r[i]));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    isendrecv();
    large_count_forms();
    proc_null_with_datatype_null();
    bounded_buffer();
    statuses();
    matched_noncontiguous();
    persistent_keeps_its_type();
    MPI_Barrier(MPI_COMM_WORLD);
    report_ok("p2p_mpi4");
    MPI_Finalize();
    return 0;
}
