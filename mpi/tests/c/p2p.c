/* Point-to-point: every send mode, wildcards and statuses, ordering,
 * PROC_NULL, probes, sendrecv, large messages, every predefined type. */
#include <string.h>
#include "check.h"

static int rank, size;

static void ring_of_types(void) {
    MPI_Datatype types[] = {MPI_CHAR, MPI_SIGNED_CHAR, MPI_UNSIGNED_CHAR, MPI_BYTE, MPI_SHORT,
                            MPI_UNSIGNED_SHORT, MPI_INT, MPI_UNSIGNED, MPI_LONG, MPI_UNSIGNED_LONG,
                            MPI_LONG_LONG, MPI_UNSIGNED_LONG_LONG, MPI_FLOAT, MPI_DOUBLE,
                            MPI_LONG_DOUBLE, MPI_WCHAR, MPI_C_BOOL, MPI_INT8_T, MPI_INT16_T,
                            MPI_INT32_T, MPI_INT64_T, MPI_UINT8_T, MPI_UINT16_T, MPI_UINT32_T,
                            MPI_UINT64_T, MPI_AINT, MPI_COUNT, MPI_OFFSET, MPI_C_COMPLEX,
                            MPI_C_DOUBLE_COMPLEX, MPI_C_LONG_DOUBLE_COMPLEX, MPI_FLOAT_INT,
                            MPI_DOUBLE_INT, MPI_LONG_INT, MPI_2INT, MPI_SHORT_INT,
                            MPI_LONG_DOUBLE_INT, MPI_PACKED, MPI_CXX_BOOL, MPI_INTEGER,
                            MPI_REAL, MPI_DOUBLE_PRECISION, MPI_COMPLEX, MPI_LOGICAL};
    int ntypes = (int)(sizeof types / sizeof types[0]);
    unsigned char out[7 * 32], in[7 * 32];
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int t = 0; t < ntypes; t++) {
        int sz = 0;
        OK(MPI_Type_size(types[t], &sz));
        CHECK(sz >= 1 && sz <= 32);
        for (int i = 0; i < 7 * sz; i++) out[i] = (unsigned char)(rank * 31 + t * 7 + i);
        memset(in, 0, sizeof in);
        MPI_Status st;
        OK(MPI_Sendrecv(out, 7, types[t], next, t, in, 7, types[t], prev, t, MPI_COMM_WORLD, &st));
        MPI_Aint lb = 0, ext = 0;
        OK(MPI_Type_get_extent(types[t], &lb, &ext));
        /* The padded pair types (MPI_DOUBLE_INT: 12 bytes of data in 16)
         * are checked member by member in types_pairs.c. */
        if (ext == sz)
            for (int i = 0; i < 7 * sz; i++) CHECK(in[i] == (unsigned char)(prev * 31 + t * 7 + i));
        int count = -1;
        OK(MPI_Get_count(&st, types[t], &count));
        CHECK(count == 7 && st.MPI_SOURCE == prev && st.MPI_TAG == t);
    }
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    MPI_Status st;

    /* Every rank sends to rank 0 in every mode; rank 0 receives from any
     * source with any tag and checks the statuses. */
    if (rank != 0) {
        int v[3] = {rank, rank * 10, rank * 100};
        OK(MPI_Send(v, 3, MPI_INT, 0, 1, MPI_COMM_WORLD));
        OK(MPI_Ssend(v, 2, MPI_INT, 0, 2, MPI_COMM_WORLD));
        OK(MPI_Rsend(v, 1, MPI_INT, 0, 3, MPI_COMM_WORLD));
        OK(MPI_Bsend(v, 3, MPI_INT, 0, 4, MPI_COMM_WORLD));
    } else {
        int seen[4][64] = {{0}};
        for (int i = 0; i < 4 * (size - 1); i++) {
            int v[3] = {-1, -1, -1};
            OK(MPI_Recv(v, 3, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &st));
            int count = -1;
            OK(MPI_Get_count(&st, MPI_INT, &count));
            int s = st.MPI_SOURCE, tag = st.MPI_TAG;
            CHECK(s >= 1 && s < size && tag >= 1 && tag <= 4);
            CHECK(st.MPI_ERROR == MPI_SUCCESS || st.MPI_ERROR == 0);
            CHECK(count == (tag == 2 ? 2 : tag == 3 ? 1 : 3));
            CHECK(v[0] == s);
            if (count > 1) CHECK(v[1] == 10 * s);
            seen[tag - 1][s]++;
        }
        for (int t = 0; t < 4; t++)
            for (int s = 1; s < size; s++) CHECK(seen[t][s] == 1);
    }
    /* Nothing else may meet rank 0's wildcard receives. */
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* Non-overtaking: messages from one sender with one tag arrive in order. */
    if (size > 1) {
        if (rank == 1) {
            for (int i = 0; i < 100; i++) OK(MPI_Send(&i, 1, MPI_INT, 0, 7, MPI_COMM_WORLD));
        } else if (rank == 0) {
            for (int i = 0; i < 100; i++) {
                int x = -1;
                OK(MPI_Recv(&x, 1, MPI_INT, 1, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
                CHECK(x == i);
            }
        }
    }

    /* MPI_PROC_NULL: sends vanish, receives complete at once, empty. */
    int x = 42;
    OK(MPI_Send(&x, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD));
    OK(MPI_Recv(&x, 1, MPI_INT, MPI_PROC_NULL, 0, MPI_COMM_WORLD, &st));
    int count = -1;
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(st.MPI_SOURCE == MPI_PROC_NULL && st.MPI_TAG == MPI_ANY_TAG && count == 0 && x == 42);

    /* Probe and Iprobe describe a message before it is received. */
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    double d[5] = {1, 2, 3, 4, 5};
    MPI_Request sreq;
    OK(MPI_Isend(d, 5, MPI_DOUBLE, next, 11, MPI_COMM_WORLD, &sreq));
    OK(MPI_Probe(prev, 11, MPI_COMM_WORLD, &st));
    OK(MPI_Get_count(&st, MPI_DOUBLE, &count));
    CHECK(st.MPI_SOURCE == prev && st.MPI_TAG == 11 && count == 5);
    int flag = 0;
    OK(MPI_Iprobe(MPI_ANY_SOURCE, 11, MPI_COMM_WORLD, &flag, &st));
    CHECK(flag == 1 && st.MPI_SOURCE == prev);
    OK(MPI_Get_count(&st, MPI_FLOAT, &count));
    CHECK(count == 10);
    OK(MPI_Get_count(&st, MPI_DOUBLE_INT, &count));
    CHECK(count == MPI_UNDEFINED); /* 40 bytes are not whole 12-byte pairs */
    double got[5] = {0};
    OK(MPI_Recv(got, 5, MPI_DOUBLE, prev, 11, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    CHECK(got[4] == 5.0);
    OK(MPI_Wait(&sreq, MPI_STATUS_IGNORE));
    CHECK(sreq == MPI_REQUEST_NULL);
    OK(MPI_Iprobe(MPI_ANY_SOURCE, 12, MPI_COMM_WORLD, &flag, &st));
    CHECK(flag == 0);

    /* Sendrecv_replace around the ring. */
    int token = rank;
    OK(MPI_Sendrecv_replace(&token, 1, MPI_INT, next, 5, prev, 5, MPI_COMM_WORLD, &st));
    CHECK(token == prev && st.MPI_SOURCE == prev);

    /* A large message (rendezvous) around the ring. */
    int n = 1 << 20;
    int *big = malloc(n * sizeof(int)), *bin = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) big[i] = rank ^ i;
    OK(MPI_Sendrecv(big, n, MPI_INT, next, 9, bin, n, MPI_INT, prev, 9, MPI_COMM_WORLD, &st));
    for (int i = 0; i < n; i += 997) CHECK(bin[i] == (prev ^ i));
    free(big);
    free(bin);

    /* Zero-count messages with null buffers. */
    OK(MPI_Sendrecv(NULL, 0, MPI_INT, next, 3, NULL, 0, MPI_INT, prev, 3, MPI_COMM_WORLD, &st));
    OK(MPI_Get_count(&st, MPI_INT, &count));
    CHECK(count == 0 && st.MPI_SOURCE == prev);

    ring_of_types();

    /* Truncation: MPI_ERR_TRUNCATE under MPI_ERRORS_RETURN. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int four[4] = {1, 2, 3, 4}, two[2] = {0, 0};
    OK(MPI_Send(four, 4, MPI_INT, rank, 8, MPI_COMM_WORLD));
    int rc = MPI_Recv(two, 2, MPI_INT, rank, 8, MPI_COMM_WORLD, &st);
    CHECK(rc == MPI_ERR_TRUNCATE && st.MPI_ERROR == MPI_ERR_TRUNCATE);

    OK(MPI_Barrier(MPI_COMM_WORLD));
    report_ok("p2p");
    OK(MPI_Finalize());
    return 0;
}
