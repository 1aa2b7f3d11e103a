/* MPI-4 persistent collectives: init once, start many times (data changed
 * between starts), Startall, completion by Wait/Waitall/Test, the request
 * kept inactive in between, freed at the end. */
#include "check.h"

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    int me, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    int x[3], sum[3], b[2], g[8], mine, sc, big[4], a2a[4];
    MPI_Request q[5];
    OK(MPI_Allreduce_init(x, sum, 3, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &q[0]));
    OK(MPI_Bcast_init(b, 2, MPI_INT, n - 1, MPI_COMM_WORLD, MPI_INFO_NULL, &q[1]));
    OK(MPI_Allgather_init(&mine, 1, MPI_INT, g, 1, MPI_INT, MPI_COMM_WORLD, MPI_INFO_NULL, &q[2]));
    OK(MPI_Scan_init(&mine, &sc, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &q[3]));
    OK(MPI_Alltoall_init(big, 1, MPI_INT, a2a, 1, MPI_INT, MPI_COMM_WORLD, MPI_INFO_NULL, &q[4]));
    for (int it = 0; it < 4; it++) {
        for (int i = 0; i < 3; i++) x[i] = me + it * i;
        b[0] = me == n - 1 ? 100 + it : -1;
        b[1] = me == n - 1 ? 200 + it : -1;
        mine = me * 10 + it;
        for (int p = 0; p < n; p++) big[p] = 100 * me + p + it;
        if (it % 2 == 0) {
            OK(MPI_Startall(5, q));
        } else {
            for (int k = 4; k >= 0; k--) OK(MPI_Start(&q[k]));
        }
        if (it == 3) {
            int flag = 0;
            while (!flag) OK(MPI_Testall(5, q, &flag, MPI_STATUSES_IGNORE));
        } else {
            OK(MPI_Waitall(5, q, MPI_STATUSES_IGNORE));
        }
        for (int k = 0; k < 5; k++) CHECK(q[k] != MPI_REQUEST_NULL); /* inactive, kept */
        for (int i = 0; i < 3; i++) CHECK(sum[i] == n * (n - 1) / 2 + n * it * i);
        CHECK(b[0] == 100 + it && b[1] == 200 + it);
        int want = 0;
        for (int p = 0; p < n; p++) {
            CHECK(g[p] == p * 10 + it);
            CHECK(a2a[p] == 100 * p + me + it);
            if (p <= me) want += p * 10 + it;
        }
        CHECK(sc == want);
    }
    /* An inactive persistent request completes at once. */
    MPI_Status st;
    OK(MPI_Wait(&q[0], &st));
    CHECK(q[0] != MPI_REQUEST_NULL);
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_Request bad;
    FAILS(MPI_ERR_ARG, MPI_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, NULL));
    FAILS(MPI_ERR_COMM, MPI_Barrier_init(MPI_COMM_NULL, MPI_INFO_NULL, &bad));
    /* A bad root is reported when the request is started. */
    OK(MPI_Bcast_init(b, 2, MPI_INT, n, MPI_COMM_WORLD, MPI_INFO_NULL, &bad));
    FAILS(MPI_ERR_ROOT, MPI_Start(&bad));
    OK(MPI_Request_free(&bad));
    OK(MPI_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, &bad));
    OK(MPI_Start(&bad));
    OK(MPI_Wait(&bad, MPI_STATUS_IGNORE));
    OK(MPI_Request_free(&bad));
    CHECK(bad == MPI_REQUEST_NULL);
    for (int k = 0; k < 5; k++) OK(MPI_Request_free(&q[k]));
    report_ok("nbc_persist");
    OK(MPI_Finalize());
    return 0;
}
