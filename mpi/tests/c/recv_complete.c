/* Every blocking receive ends the same way (mpi/src/p2p.rs `complete_recv`):
 * a noncontiguous receive type is unpacked as far as the message goes, the
 * status names the sender, the tag and the length, and a truncated message is
 * MPI_ERR_TRUNCATE with the class in the status. Checked for MPI_Recv(_c),
 * MPI_Sendrecv(_c), MPI_Sendrecv_replace(_c) and MPI_Mrecv(_c), with a
 * strided type and with a predefined one, in a ring over every rank. Then
 * MPI_Allreduce's entry: predefined operations on predefined types (its
 * common case) against the operations and types it must refuse, and a user
 * operation on a predefined type, which takes the other way. */
#include <string.h>
#include "check.h"

enum { FORMS = 8 };
static const char *form_name[FORMS] = {"Recv", "Recv_c", "Sendrecv", "Sendrecv_c",
                                       "Sendrecv_replace", "Sendrecv_replace_c",
                                       "Mrecv", "Mrecv_c"};

/* Sends `len` ints (i * 10 + base) to `next` and receives from `prev` with
 * form `f` into `buf` as `count` elements of `type`; returns the code. */
static int exchange(int f, int *buf, int count, MPI_Datatype type, int len, int base, int tag,
                    int next, int prev, MPI_Status *st) {
    int out[16];
    for (int i = 0; i < len; i++) out[i] = i * 10 + base;
    MPI_Request r;
    MPI_Message m;
    int rc;
    switch (f) {
    case 0:
    case 1:
    case 6:
    case 7:
        OK(MPI_Isend(out, len, MPI_INT, next, tag, MPI_COMM_WORLD, &r));
        if (f == 0) rc = MPI_Recv(buf, count, type, prev, tag, MPI_COMM_WORLD, st);
        else if (f == 1) rc = MPI_Recv_c(buf, count, type, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, st);
        else {
            OK(MPI_Mprobe(prev, tag, MPI_COMM_WORLD, &m, st));
            rc = f == 6 ? MPI_Mrecv(buf, count, type, &m, st) : MPI_Mrecv_c(buf, count, type, &m, st);
            CHECK(m == MPI_MESSAGE_NULL);
        }
        OK(MPI_Wait(&r, MPI_STATUS_IGNORE));
        return rc;
    case 2:
        return MPI_Sendrecv(out, len, MPI_INT, next, tag, buf, count, type, prev, tag,
                            MPI_COMM_WORLD, st);
    case 3:
        return MPI_Sendrecv_c(out, len, MPI_INT, next, tag, buf, count, type, MPI_ANY_SOURCE,
                              MPI_ANY_TAG, MPI_COMM_WORLD, st);
    default:
        /* The replace forms send what the buffer holds: the same count and
         * type, so the message is that many elements of `type`. */
        return f == 4 ? MPI_Sendrecv_replace(buf, count, type, next, tag, prev, tag,
                                             MPI_COMM_WORLD, st)
                      : MPI_Sendrecv_replace_c(buf, count, type, next, tag, prev, MPI_ANY_TAG,
                                               MPI_COMM_WORLD, st);
    }
}

static void user_max(void *in, void *inout, int *len, MPI_Datatype *dt) {
    CHECK(*dt == MPI_INT);
    for (int i = 0; i < *len; i++) {
        int a = ((int *)in)[i], *b = &((int *)inout)[i];
        if (a > *b) *b = a;
    }
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    int me, n;
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &me));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &n));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int next = (me + 1) % n, prev = (me + n - 1) % n;
    MPI_Datatype every_other; /* 3 ints, every other one: 12 bytes in 20 */
    OK(MPI_Type_vector(3, 1, 2, MPI_INT, &every_other));
    OK(MPI_Type_commit(&every_other));

    for (int f = 0; f < FORMS; f++) {
        int replace = f == 4 || f == 5;
        /* A strided type, the whole message: unpacked into every other slot. */
        int buf[16];
        MPI_Status st;
        for (int i = 0; i < 16; i++) buf[i] = replace ? 100 * prev + i : -1;
        st.MPI_ERROR = 12345;
        int tag = 20 + f;
        int rc = exchange(f, buf, 1, every_other, 3, me, tag, next, prev, &st);
        if (rc != MPI_SUCCESS) fprintf(stderr, "rank %d: %s strided: rc %d\n", me, form_name[f], rc);
        CHECK(rc == MPI_SUCCESS);
        CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == tag);
        /* A function completing one operation leaves MPI_ERROR alone. */
        CHECK(st.MPI_ERROR == 12345);
        int cnt = -1;
        OK(MPI_Get_count(&st, MPI_INT, &cnt));
        CHECK(cnt == 3);
        OK(MPI_Get_count(&st, every_other, &cnt));
        CHECK(cnt == 1);
        for (int i = 0; i < 3; i++) {
            /* The replace forms received what `prev` held in its slots
             * 0, 2, 4 (100 * its prev + slot); the others the ints sent. */
            int want = replace ? 100 * ((prev + n - 1) % n) + 2 * i : i * 10 + prev;
            CHECK(buf[2 * i] == want);
            if (i < 2) CHECK(buf[2 * i + 1] == (replace ? 100 * prev + 2 * i + 1 : -1));
        }
        CHECK(buf[6] == (replace ? 100 * prev + 6 : -1));

        /* A message longer than the strided buffer: MPI_ERR_TRUNCATE, in
         * the status too; the receive buffer's gaps stay as they were. */
        if (!replace) {
            for (int i = 0; i < 16; i++) buf[i] = -1;
            st.MPI_ERROR = MPI_SUCCESS;
            FAILS(MPI_ERR_TRUNCATE, exchange(f, buf, 1, every_other, 5, me, 40 + f, next, prev, &st));
            CHECK(st.MPI_ERROR == MPI_ERR_TRUNCATE);
            CHECK(buf[1] == -1 && buf[3] == -1 && buf[5] == -1 && buf[6] == -1);
        }

        /* A predefined type: the common case, the same status. */
        int small[4] = {-1, -1, -1, -1};
        for (int i = 0; i < 4; i++) small[i] = replace ? 7 * prev + i : -1;
        st.MPI_ERROR = 777;
        rc = exchange(f, small, 3, MPI_INT, 3, me, 60 + f, next, prev, &st);
        CHECK(rc == MPI_SUCCESS && st.MPI_SOURCE == prev && st.MPI_TAG == 60 + f);
        CHECK(st.MPI_ERROR == 777);
        OK(MPI_Get_count(&st, MPI_INT, &cnt));
        CHECK(cnt == 3);
        for (int i = 0; i < 3; i++)
            CHECK(small[i] == (replace ? 7 * ((prev + n - 1) % n) + i : i * 10 + prev));
        CHECK(small[3] == (replace ? 7 * prev + 3 : -1));
        if (!replace) {
            st.MPI_ERROR = MPI_SUCCESS;
            FAILS(MPI_ERR_TRUNCATE, exchange(f, small, 2, MPI_INT, 4, me, 80 + f, next, prev, &st));
            CHECK(st.MPI_ERROR == MPI_ERR_TRUNCATE);
        }
        OK(MPI_Barrier(MPI_COMM_WORLD));
    }

    /* MPI_Allreduce: predefined operations on predefined types... */
    int x[3] = {me, 2 * me, 1}, y[3] = {0, 0, 0};
    OK(MPI_Allreduce(x, y, 3, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(y[0] == n * (n - 1) / 2 && y[1] == n * (n - 1) && y[2] == n);
    OK(MPI_Allreduce(x, y, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    CHECK(y[0] == n - 1 && y[1] == 2 * (n - 1));
    int pair[2] = {me % 2, me}, best[2];
    OK(MPI_Allreduce(pair, best, 1, MPI_2INT, MPI_MAXLOC, MPI_COMM_WORLD));
    CHECK(best[0] == (n > 1) && best[1] == (n > 1 ? 1 : 0));
    y[0] = me;
    OK(MPI_Allreduce(MPI_IN_PLACE, y, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    CHECK(y[0] == 0);
    /* ... the ones it refuses... */
    FAILS(MPI_ERR_OP, MPI_Allreduce(x, y, 1, MPI_INT, MPI_REPLACE, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Allreduce(x, y, 1, MPI_INT, MPI_NO_OP, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Allreduce(x, y, 1, MPI_INT, MPI_OP_NULL, MPI_COMM_WORLD));
    float fx = 1.0f, fy = 0.0f;
    FAILS(MPI_ERR_OP, MPI_Allreduce(&fx, &fy, 1, MPI_FLOAT, MPI_BAND, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Allreduce(pair, best, 1, MPI_2INT, MPI_SUM, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE, MPI_Allreduce(x, y, 1, MPI_DATATYPE_NULL, MPI_SUM, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Allreduce(x, y, -1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COMM, MPI_Allreduce(x, y, 1, MPI_INT, MPI_SUM, MPI_COMM_NULL));
    /* ... and a user operation on a predefined type. */
    MPI_Op op;
    OK(MPI_Op_create(user_max, 1, &op));
    x[0] = 3 * me;
    OK(MPI_Allreduce(x, y, 1, MPI_INT, op, MPI_COMM_WORLD));
    CHECK(y[0] == 3 * (n - 1));
    OK(MPI_Op_free(&op));
    FAILS(MPI_ERR_OP, MPI_Allreduce(x, y, 1, MPI_INT, op, MPI_COMM_WORLD));

    OK(MPI_Type_free(&every_other));
    report_ok("recv_complete");
    OK(MPI_Finalize());
    return 0;
}
