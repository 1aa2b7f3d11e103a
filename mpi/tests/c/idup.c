/* MPI_Comm_idup is nonblocking: a process posts it, then does the
 * point-to-point another process needs before that one calls idup (this
 * deadlocks if idup waits for every process); dups of two communicators
 * posted in opposite orders on different ranks; Test and
 * Request_get_status on an idup's request; the same on an
 * intercommunicator. Also: the request of a nonblocking collective may be
 * freed once Request_get_status has seen it complete. */
#include "check.h"

/* Sum of ranks over newcomm must be the expected one. */
static void check_sum(MPI_Comm c, int mine, int want) {
    int sum = -1;
    OK(MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, c));
    CHECK(sum == want);
}

int main(int argc, char **argv) {
    int rank, size, i, flag, buf[2];
    MPI_Comm newcomm, a, b, na, nb;
    MPI_Request req, reqs[2];
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));

    /* 1. Rank 0 calls idup only after it has received from every other
     * rank, which sends after posting its idup. */
    newcomm = MPI_COMM_NULL;
    if (rank == 0) {
        for (i = 1; i < size; i++)
            OK(MPI_Recv(buf, 2, MPI_INT, i, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        OK(MPI_Comm_idup(MPI_COMM_WORLD, &newcomm, &req));
        OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    } else {
        OK(MPI_Comm_idup(MPI_COMM_WORLD, &newcomm, &req));
        buf[0] = rank;
        buf[1] = size;
        OK(MPI_Ssend(buf, 2, MPI_INT, 0, 0, MPI_COMM_WORLD));
        OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    }
    CHECK(req == MPI_REQUEST_NULL && newcomm != MPI_COMM_NULL);
    {
        int r2, s2, cmp;
        OK(MPI_Comm_rank(newcomm, &r2));
        OK(MPI_Comm_size(newcomm, &s2));
        CHECK(r2 == rank && s2 == size);
        OK(MPI_Comm_compare(newcomm, MPI_COMM_WORLD, &cmp));
        CHECK(cmp == MPI_CONGRUENT);
    }
    check_sum(newcomm, rank, size * (size - 1) / 2);
    OK(MPI_Comm_free(&newcomm));

    /* 2. Two communicators dup'ed in opposite orders on even and odd
     * ranks, completed together. */
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &a));
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &b));
    if (rank % 2 == 0) {
        OK(MPI_Comm_idup(a, &na, &reqs[0]));
        OK(MPI_Comm_idup(b, &nb, &reqs[1]));
    } else {
        OK(MPI_Comm_idup(b, &nb, &reqs[1]));
        OK(MPI_Comm_idup(a, &na, &reqs[0]));
    }
    OK(MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE));
    check_sum(na, 1, size);
    check_sum(nb, rank, size * (size - 1) / 2);
    /* The two dups and their parents talk on four different contexts. */
    if (size > 1) {
        int x[4] = {-1, -1, -1, -1}, y[4] = {10, 11, 12, 13};
        int to = (rank + 1) % size, from = (rank + size - 1) % size;
        MPI_Request q[8];
        MPI_Comm cs[4] = {a, b, na, nb};
        for (i = 0; i < 4; i++)
            OK(MPI_Irecv(&x[i], 1, MPI_INT, from, 5, cs[i], &q[i]));
        for (i = 3; i >= 0; i--)
            OK(MPI_Isend(&y[i], 1, MPI_INT, to, 5, cs[i], &q[4 + i]));
        OK(MPI_Waitall(8, q, MPI_STATUSES_IGNORE));
        for (i = 0; i < 4; i++)
            CHECK(x[i] == 10 + i);
    }
    OK(MPI_Comm_free(&na));
    OK(MPI_Comm_free(&nb));

    /* 3. Test until complete, then Request_get_status before Wait. */
    OK(MPI_Comm_idup(a, &na, &req));
    do {
        OK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    } while (!flag);
    CHECK(req == MPI_REQUEST_NULL);
    check_sum(na, 2, 2 * size);
    OK(MPI_Comm_idup(na, &nb, &req));
    do {
        OK(MPI_Request_get_status(req, &flag, MPI_STATUS_IGNORE));
    } while (!flag);
    OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    check_sum(nb, 3, 3 * size);
    OK(MPI_Comm_free(&na));
    OK(MPI_Comm_free(&nb));
    OK(MPI_Comm_free(&a));
    OK(MPI_Comm_free(&b));

    /* 4. A nonblocking collective's request, seen complete, may be freed;
     * an active one may not. */
    OK(MPI_Ibarrier(MPI_COMM_WORLD, &req));
    do {
        OK(MPI_Request_get_status(req, &flag, MPI_STATUS_IGNORE));
    } while (!flag);
    OK(MPI_Request_free(&req));
    CHECK(req == MPI_REQUEST_NULL);

    /* 5. The same as 1 on an intercommunicator of the even and odd ranks:
     * every process but local rank 0 sends to the remote rank 0 after
     * posting idup; local rank 0 posts it after receiving. */
    if (size >= 2) {
        MPI_Comm local, ic, nic;
        int lrank, lsize, rsize;
        OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &local));
        OK(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, rank == 0 ? 1 : 0, 77, &ic));
        OK(MPI_Comm_rank(ic, &lrank));
        OK(MPI_Comm_size(ic, &lsize));
        OK(MPI_Comm_remote_size(ic, &rsize));
        if (lrank == 0) {
            for (i = 1; i < rsize; i++)
                OK(MPI_Recv(buf, 2, MPI_INT, i, 0, ic, MPI_STATUS_IGNORE));
            OK(MPI_Comm_idup(ic, &nic, &req));
            OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
        } else {
            OK(MPI_Comm_idup(ic, &nic, &req));
            OK(MPI_Ssend(buf, 2, MPI_INT, 0, 0, ic));
            OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
        }
        {
            int flag2, r2, s2;
            OK(MPI_Comm_test_inter(nic, &flag2));
            CHECK(flag2);
            OK(MPI_Comm_rank(nic, &r2));
            OK(MPI_Comm_remote_size(nic, &s2));
            CHECK(r2 == lrank && s2 == rsize);
        }
        /* The remote group's sum of local ranks. */
        check_sum(nic, lrank, rsize * (rsize - 1) / 2);
        OK(MPI_Comm_free(&nic));
        OK(MPI_Comm_free(&ic));
        OK(MPI_Comm_free(&local));
    }

    report_ok("idup");
    OK(MPI_Finalize());
    return 0;
}
