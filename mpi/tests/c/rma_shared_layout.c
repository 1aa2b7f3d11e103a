/* Window corners MPICH's rma tests reach: the parts of a shared window lie
 * one after the other from the first rank's base (the default, contiguous
 * layout), an empty part's query gives size 0 and a null base,
 * MPI_Win_shared_query works on every flavor (memory not reachable here is
 * size 0 and null), request-based operations to MPI_PROC_NULL under a lock
 * of MPI_PROC_NULL, and MPI_Put / MPI_Get / MPI_Accumulate from MPI_BOTTOM
 * with a datatype of absolute addresses. Runs on any number of ranks (one
 * node). */
#include <string.h>
#include "check.h"

#define N 4

static int rank, size;

static void shared_contiguous(void) {
    MPI_Comm shm;
    OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &shm));
    int r, n;
    MPI_Comm_rank(shm, &r);
    MPI_Comm_size(shm, &n);
    /* Odd ranks have no part. */
    MPI_Aint mine = (r % 2 == 0) ? N * sizeof(int) : 0;
    int *base = NULL;
    MPI_Win win;
    OK(MPI_Win_allocate_shared(mine, sizeof(int), MPI_INFO_NULL, shm, &base, &win));
    MPI_Aint qs = -1;
    int du = -1;
    int *first = NULL;
    OK(MPI_Win_shared_query(win, MPI_PROC_NULL, &qs, &du, &first));
    CHECK(qs == N * (MPI_Aint)sizeof(int) && du == (int)sizeof(int));
    OK(MPI_Win_lock_all(MPI_MODE_NOCHECK, win));
    if (mine)
        for (int i = 0; i < N; i++) base[i] = 100 * r + i;
    OK(MPI_Win_sync(win));
    OK(MPI_Barrier(shm));
    OK(MPI_Win_sync(win));
    /* From the first base, the even ranks' parts, back to back. */
    for (int k = 0, j = 0; k < n; k++) {
        int *p = NULL;
        OK(MPI_Win_shared_query(win, k, &qs, &du, &p));
        if (k % 2 == 0) {
            CHECK(qs == N * (MPI_Aint)sizeof(int) && p == first + j * N);
            for (int i = 0; i < N; i++) CHECK(first[j * N + i] == 100 * k + i);
            j++;
        } else {
            CHECK(qs == 0 && p == NULL);
        }
    }
    /* A put to the last even rank lands in its part. */
    int last = (n - 1) / 2 * 2, v = -7;
    OK(MPI_Win_unlock_all(win));
    OK(MPI_Barrier(shm));
    if (r == 0) {
        OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, last, 0, win));
        OK(MPI_Put(&v, 1, MPI_INT, last, N - 1, 1, MPI_INT, win));
        OK(MPI_Win_unlock(last, win));
    }
    OK(MPI_Barrier(shm));
    if (r == last) CHECK(base[N - 1] == -7);
    OK(MPI_Win_free(&win));
    OK(MPI_Comm_free(&shm));
}

static void query_other_flavors(void) {
    int *mem = calloc(N, sizeof(int));
    MPI_Win win;
    OK(MPI_Win_create(mem, N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    for (int k = 0; k < size; k++) {
        MPI_Aint qs = -1;
        int du = -1;
        int *p = (int *)&qs;
        OK(MPI_Win_shared_query(win, k, &qs, &du, &p));
        CHECK(du == (int)sizeof(int));
        if (k == rank) {
            CHECK(qs == N * (MPI_Aint)sizeof(int) && p == mem);
        } else {
            CHECK(qs == 0 && p == NULL);
        }
    }
    OK(MPI_Win_free(&win));
    free(mem);

    int *base;
    OK(MPI_Win_allocate(N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    MPI_Aint qs = -1;
    int du = -1;
    int *p = NULL;
    OK(MPI_Win_shared_query(win, rank, &qs, &du, &p));
    CHECK(qs == N * (MPI_Aint)sizeof(int) && p == base);
    OK(MPI_Win_free(&win));
}

static void proc_null_requests(void) {
    int *base, buf[N] = {0}, res[N];
    MPI_Win win;
    MPI_Request req;
    OK(MPI_Win_allocate(N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, MPI_PROC_NULL, 0, win));
    OK(MPI_Rput(buf, N, MPI_INT, MPI_PROC_NULL, 0, N, MPI_INT, win, &req));
    OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    OK(MPI_Rget(buf, N, MPI_INT, MPI_PROC_NULL, 0, N, MPI_INT, win, &req));
    OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    OK(MPI_Raccumulate(buf, N, MPI_INT, MPI_PROC_NULL, 0, N, MPI_INT, MPI_SUM, win, &req));
    OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    OK(MPI_Rget_accumulate(buf, N, MPI_INT, res, N, MPI_INT, MPI_PROC_NULL, 0, N, MPI_INT, MPI_SUM, win, &req));
    OK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    OK(MPI_Win_unlock(MPI_PROC_NULL, win));
    /* To a real rank they still need a passive-target epoch. */
    FAILS(MPI_ERR_RMA_SYNC, MPI_Rput(buf, N, MPI_INT, 0, 0, N, MPI_INT, win, &req));
    OK(MPI_Win_free(&win));
}

static void from_bottom(void) {
    int *base;
    MPI_Win win;
    OK(MPI_Win_allocate(2 * N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win));
    for (int i = 0; i < 2 * N; i++) base[i] = 0;
    int src[2 * N], dst[2 * N];
    for (int i = 0; i < 2 * N; i++) src[i] = 10 * rank + i;
    /* Every other int of src and dst, by absolute address. */
    MPI_Aint addr[N];
    int lens[N];
    for (int i = 0; i < N; i++) {
        MPI_Get_address(&src[2 * i], &addr[i]);
        lens[i] = 1;
    }
    MPI_Datatype from, to;
    OK(MPI_Type_create_hindexed(N, lens, addr, MPI_INT, &from));
    OK(MPI_Type_commit(&from));
    for (int i = 0; i < N; i++) MPI_Get_address(&dst[2 * i], &addr[i]);
    OK(MPI_Type_create_hindexed(N, lens, addr, MPI_INT, &to));
    OK(MPI_Type_commit(&to));
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Win_fence(0, win));
    OK(MPI_Put(MPI_BOTTOM, 1, from, right, 0, N, MPI_INT, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < N; i++) CHECK(base[i] == 10 * left + 2 * i);
    OK(MPI_Accumulate(MPI_BOTTOM, 1, from, right, N, N, MPI_INT, MPI_SUM, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < N; i++) CHECK(base[N + i] == 10 * left + 2 * i);
    for (int i = 0; i < 2 * N; i++) dst[i] = -1;
    OK(MPI_Get(MPI_BOTTOM, 1, to, right, 0, N, MPI_INT, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < N; i++) CHECK(dst[2 * i] == 10 * rank + 2 * i && dst[2 * i + 1] == -1);
    OK(MPI_Type_free(&from));
    OK(MPI_Type_free(&to));
    OK(MPI_Win_free(&win));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    shared_contiguous();
    query_other_flavors();
    proc_null_requests();
    from_bottom();
    report_ok("rma_shared_layout");
    MPI_Finalize();
    return 0;
}
