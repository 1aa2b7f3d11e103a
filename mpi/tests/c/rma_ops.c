/* One-sided communication: every synchronization mode and every operation,
 * results checked against a serial model of what each rank did. Runs on any
 * number of ranks. */
#include <string.h>
#include "check.h"

#define N 16

static int rank, size;

/* The value rank r puts at element i of its neighbour. */
static int val(int r, int i) { return 1000 * (r + 1) + i; }

/* Put and get under fence epochs, on a created and an allocated window. */
static void fence_put_get(int allocate) {
    int *mem = NULL, *own = NULL;
    MPI_Win win;
    if (allocate) {
        OK(MPI_Win_allocate(N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    } else {
        own = calloc(N, sizeof(int));
        OK(MPI_Win_create(own, N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        mem = own;
    }
    int flavor_ok = 0, *flavor = NULL, *du = NULL, flag = 0, *model = NULL;
    MPI_Aint *wsize = NULL;
    void *base = NULL;
    OK(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
    CHECK(flag && *flavor == (allocate ? MPI_WIN_FLAVOR_ALLOCATE : MPI_WIN_FLAVOR_CREATE));
    OK(MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, &du, &flag));
    CHECK(flag && *du == (int)sizeof(int));
    OK(MPI_Win_get_attr(win, MPI_WIN_SIZE, &wsize, &flag));
    CHECK(flag && *wsize == N * (MPI_Aint)sizeof(int));
    OK(MPI_Win_get_attr(win, MPI_WIN_BASE, &base, &flag));
    CHECK(flag && base == mem);
    OK(MPI_Win_get_attr(win, MPI_WIN_MODEL, &model, &flag));
    CHECK(flag && *model == MPI_WIN_UNIFIED);
    flavor_ok = 1;
    CHECK(flavor_ok);

    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    int src[N];
    for (int i = 0; i < N; i++) src[i] = val(rank, i);
    OK(MPI_Win_fence(MPI_MODE_NOPRECEDE, win));
    OK(MPI_Put(src, N, MPI_INT, right, 0, N, MPI_INT, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < N; i++) CHECK(mem[i] == val(left, i));
    /* Get elements 4..8 of the left neighbour's window: what its left put. */
    int got[4];
    OK(MPI_Get(got, 4, MPI_INT, left, 4, 4, MPI_INT, win));
    OK(MPI_Win_fence(MPI_MODE_NOSUCCEED, win));
    int ll = (left + size - 1) % size;
    for (int i = 0; i < 4; i++) CHECK(got[i] == val(ll, 4 + i));
    OK(MPI_Win_free(&win));
    CHECK(win == MPI_WIN_NULL);
    free(own);
}

/* Post/start/complete/wait: everyone exposes to everyone, writes its rank
 * at its own slot of every other rank. */
static void pscw(void) {
    int *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(size * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    for (int i = 0; i < size; i++) mem[i] = -1;
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Group g;
    OK(MPI_Win_get_group(win, &g));
    int gs;
    MPI_Group_size(g, &gs);
    CHECK(gs == size);
    OK(MPI_Win_post(g, 0, win));
    OK(MPI_Win_start(g, 0, win));
    for (int t = 0; t < size; t++) OK(MPI_Put(&rank, 1, MPI_INT, t, rank, 1, MPI_INT, win));
    OK(MPI_Win_complete(win));
    int flag = 0;
    OK(MPI_Win_test(win, &flag));
    if (!flag) OK(MPI_Win_wait(win));
    for (int i = 0; i < size; i++) CHECK(mem[i] == i);
    MPI_Group_free(&g);
    OK(MPI_Win_free(&win));
}

/* Passive target: exclusive locks around read-modify-write, shared locks,
 * lock_all with flushes; request-based operations. */
static void passive(void) {
    long *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(4 * sizeof(long), sizeof(long), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    memset(mem, 0, 4 * sizeof(long));
    MPI_Barrier(MPI_COMM_WORLD);
    /* Everyone increments rank 0's counter 10 times under an exclusive lock. */
    for (int k = 0; k < 10; k++) {
        long v;
        OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
        OK(MPI_Get(&v, 1, MPI_LONG, 0, 0, 1, MPI_LONG, win));
        OK(MPI_Win_flush(0, win));
        v++;
        OK(MPI_Put(&v, 1, MPI_LONG, 0, 0, 1, MPI_LONG, win));
        OK(MPI_Win_unlock(0, win));
    }
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    long total;
    OK(MPI_Get(&total, 1, MPI_LONG, 0, 0, 1, MPI_LONG, win));
    OK(MPI_Win_unlock(0, win));
    CHECK(total == 10L * size);
    MPI_Barrier(MPI_COMM_WORLD);

    /* lock_all: each rank adds to element 1 of everyone, flushes, requests. */
    OK(MPI_Win_lock_all(0, win));
    long one = 1;
    for (int t = 0; t < size; t++) {
        MPI_Request rq;
        OK(MPI_Raccumulate(&one, 1, MPI_LONG, t, 1, 1, MPI_LONG, MPI_SUM, win, &rq));
        OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
        OK(MPI_Win_flush_local(t, win));
    }
    OK(MPI_Win_flush_all(win));
    OK(MPI_Win_flush_local_all(win));
    OK(MPI_Win_unlock_all(win));
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_lock_all(MPI_MODE_NOCHECK, win));
    OK(MPI_Win_sync(win));
    CHECK(mem[1] == size);
    MPI_Request rq[3];
    long put_v = 100 + rank, got_v = -1, old = -1, add = 5;
    int right = (rank + 1) % size;
    OK(MPI_Rput(&put_v, 1, MPI_LONG, right, 2, 1, MPI_LONG, win, &rq[0]));
    OK(MPI_Win_flush(right, win));
    OK(MPI_Rget(&got_v, 1, MPI_LONG, right, 2, 1, MPI_LONG, win, &rq[1]));
    OK(MPI_Rget_accumulate(&add, 1, MPI_LONG, &old, 1, MPI_LONG, right, 3, 1, MPI_LONG, MPI_SUM, win, &rq[2]));
    OK(MPI_Waitall(3, rq, MPI_STATUSES_IGNORE));
    CHECK(got_v == 100 + rank);
    CHECK(old == 0);
    OK(MPI_Win_unlock_all(win));
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK(mem[3] == 5);
    OK(MPI_Win_free(&win));
}

/* Every predefined operation of accumulate on its types, fetching and not,
 * against a serial model: every rank combines into rank 0 in turn. */
static void accumulates(void) {
    enum { K = 6 };
    int *mi;
    double *md;
    unsigned char *mb;
    MPI_Win wi, wd, wb;
    OK(MPI_Win_allocate(K * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mi, &wi));
    OK(MPI_Win_allocate(K * sizeof(double), sizeof(double), MPI_INFO_NULL, MPI_COMM_WORLD, &md, &wd));
    OK(MPI_Win_allocate(K, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &mb, &wb));
    MPI_Op iops[] = {MPI_SUM, MPI_PROD, MPI_MIN, MPI_MAX, MPI_BAND, MPI_BOR, MPI_BXOR, MPI_LAND, MPI_LOR, MPI_LXOR, MPI_REPLACE};
    int nops = sizeof iops / sizeof iops[0];
    for (int o = 0; o < nops; o++) {
        int init[K] = {3, 0, 7, -2, 12, 1};
        memcpy(mi, init, sizeof init);
        MPI_Barrier(MPI_COMM_WORLD);
        OK(MPI_Win_fence(0, wi));
        int mine[K];
        for (int i = 0; i < K; i++) mine[i] = (rank + 2) * (i + 1) % 5;
        OK(MPI_Accumulate(mine, K, MPI_INT, 0, 0, K, MPI_INT, iops[o], wi));
        OK(MPI_Win_fence(0, wi));
        if (rank == 0) {
            int m[K];
            memcpy(m, init, sizeof m);
            for (int r = 0; r < size; r++)
                for (int i = 0; i < K; i++) {
                    int a = m[i], b = (r + 2) * (i + 1) % 5, v = 0;
                    if (iops[o] == MPI_SUM) v = a + b;
                    else if (iops[o] == MPI_PROD) v = a * b;
                    else if (iops[o] == MPI_MIN) v = a < b ? a : b;
                    else if (iops[o] == MPI_MAX) v = a > b ? a : b;
                    else if (iops[o] == MPI_BAND) v = a & b;
                    else if (iops[o] == MPI_BOR) v = a | b;
                    else if (iops[o] == MPI_BXOR) v = a ^ b;
                    else if (iops[o] == MPI_LAND) v = a && b;
                    else if (iops[o] == MPI_LOR) v = a || b;
                    else if (iops[o] == MPI_LXOR) v = !a != !b;
                    else v = b; /* REPLACE: checked below as some rank's value */
                    m[i] = v;
                }
            for (int i = 0; i < K; i++) {
                if (iops[o] == MPI_REPLACE) {
                    /* Some rank's value, whole. */
                    int any = 0;
                    for (int r = 0; r < size; r++) any |= mi[i] == (r + 2) * (i + 1) % 5;
                    CHECK(any);
                } else {
                    CHECK(mi[i] == m[i]);
                }
            }
        }
        OK(MPI_Win_fence(0, wi));
    }
    /* Doubles: SUM, PROD, MIN, MAX; get_accumulate returns the old values. */
    MPI_Op dops[] = {MPI_SUM, MPI_MAX, MPI_MIN, MPI_PROD};
    for (int o = 0; o < 4; o++) {
        for (int i = 0; i < K; i++) md[i] = 1.5;
        OK(MPI_Win_fence(0, wd));
        double mine[K], old[K];
        for (int i = 0; i < K; i++) mine[i] = rank + 0.5 * i;
        /* One at a time so each sees the one before: rank order. */
        for (int r = 0; r < size; r++) {
            if (r == rank) {
                OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, wd));
                OK(MPI_Get_accumulate(mine, K, MPI_DOUBLE, old, K, MPI_DOUBLE, 0, 0, K, MPI_DOUBLE, dops[o], wd));
                OK(MPI_Win_unlock(0, wd));
                double m[K];
                for (int i = 0; i < K; i++) m[i] = 1.5;
                for (int q = 0; q < r; q++)
                    for (int i = 0; i < K; i++) {
                        double b = q + 0.5 * i;
                        if (dops[o] == MPI_SUM) m[i] += b;
                        else if (dops[o] == MPI_MAX) m[i] = m[i] > b ? m[i] : b;
                        else if (dops[o] == MPI_MIN) m[i] = m[i] < b ? m[i] : b;
                        else m[i] *= b;
                    }
                for (int i = 0; i < K; i++) CHECK(old[i] == m[i]);
            }
            MPI_Barrier(MPI_COMM_WORLD);
        }
        OK(MPI_Win_fence(0, wd));
    }
    /* Bytes: bitwise ones; NO_OP reads. */
    memset(mb, 0, K);
    OK(MPI_Win_fence(0, wb));
    unsigned char bit = (unsigned char)(1u << (rank % 8));
    for (int i = 0; i < K; i++) OK(MPI_Accumulate(&bit, 1, MPI_BYTE, 0, i, 1, MPI_BYTE, MPI_BOR, wb));
    OK(MPI_Win_fence(0, wb));
    unsigned char want = 0, got = 0;
    for (int r = 0; r < size; r++) want |= (unsigned char)(1u << (r % 8));
    OK(MPI_Get_accumulate(NULL, 0, MPI_BYTE, &got, 1, MPI_BYTE, 0, 3, 1, MPI_BYTE, MPI_NO_OP, wb));
    OK(MPI_Win_fence(0, wb));
    CHECK(got == want);
    /* MINLOC/MAXLOC on (double, int) pairs and complex SUM/PROD, into
     * rank 0's window of 2 pairs + 2 complex doubles (48 bytes). */
    typedef struct { double v; int i; } di_t;
    typedef struct { double re, im; } cd_t;
    unsigned char *mx;
    MPI_Win wx;
    OK(MPI_Win_allocate(2 * sizeof(di_t) + 2 * sizeof(cd_t), 1, MPI_INFO_NULL, MPI_COMM_WORLD, &mx, &wx));
    di_t *pairs = (di_t *)mx;
    cd_t *cx = (cd_t *)(mx + 2 * sizeof(di_t));
    pairs[0].v = 50; pairs[0].i = 1000; /* for MINLOC */
    pairs[1].v = -50; pairs[1].i = 1000; /* for MAXLOC */
    cx[0].re = 1; cx[0].im = 0; /* SUM */
    cx[1].re = 1; cx[1].im = 0; /* PROD */
    OK(MPI_Win_fence(0, wx));
    /* Values (rank % 2) * 10: ties broken by the smaller index. */
    di_t me = {(rank % 2) * 10.0, rank};
    OK(MPI_Accumulate(&me, 1, MPI_DOUBLE_INT, 0, 0, 1, MPI_DOUBLE_INT, MPI_MINLOC, wx));
    OK(MPI_Accumulate(&me, 1, MPI_DOUBLE_INT, 0, sizeof(di_t), 1, MPI_DOUBLE_INT, MPI_MAXLOC, wx));
    cd_t z = {1, 1}; /* 1 + i */
    OK(MPI_Accumulate(&z, 1, MPI_C_DOUBLE_COMPLEX, 0, 2 * sizeof(di_t), 1, MPI_C_DOUBLE_COMPLEX, MPI_SUM, wx));
    OK(MPI_Accumulate(&z, 1, MPI_C_DOUBLE_COMPLEX, 0, 2 * sizeof(di_t) + sizeof(cd_t), 1, MPI_C_DOUBLE_COMPLEX, MPI_PROD, wx));
    OK(MPI_Win_fence(0, wx));
    if (rank == 0) {
        CHECK(pairs[0].v == 0 && pairs[0].i == 0);
        if (size > 1) CHECK(pairs[1].v == 10 && pairs[1].i == 1);
        else CHECK(pairs[1].v == 0 && pairs[1].i == 0);
        CHECK(cx[0].re == 1 + size && cx[0].im == size);
        /* (1 + i)^n */
        double re = 1, im = 0;
        for (int r = 0; r < size; r++) { double t = re - im; im = re + im; re = t; }
        CHECK(cx[1].re == re && cx[1].im == im);
    }
    OK(MPI_Win_fence(0, wx));
    OK(MPI_Win_free(&wx));
    OK(MPI_Win_free(&wi));
    OK(MPI_Win_free(&wd));
    OK(MPI_Win_free(&wb));
}

/* Fetch_and_op tickets and Compare_and_swap on ints and longs. */
static void atomics(void) {
    int *mi;
    MPI_Win win;
    OK(MPI_Win_allocate(4 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mi, &win));
    memset(mi, 0, 4 * sizeof(int));
    mi[2] = -1;
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_lock_all(0, win));
    int one = 1, ticket[20];
    for (int k = 0; k < 20; k++) OK(MPI_Fetch_and_op(&one, &ticket[k], MPI_INT, 0, 0, MPI_SUM, win));
    for (int k = 1; k < 20; k++) CHECK(ticket[k] > ticket[k - 1]);
    /* Everyone tries to claim slot 2 (holding -1) with its rank: one wins. */
    int cmp = -1, old = 0;
    OK(MPI_Compare_and_swap(&rank, &cmp, &old, MPI_INT, 0, 2, win));
    OK(MPI_Win_flush_all(win));
    OK(MPI_Win_unlock_all(win));
    int won = old == -1, winners = 0;
    MPI_Allreduce(&won, &winners, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    CHECK(winners == 1);
    if (rank == 0) {
        CHECK(mi[0] == 20 * size);
        CHECK(mi[2] >= 0 && mi[2] < size);
    }
    /* A CAS that does not match leaves the value. */
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    int seven = 7, nomatch = -5, prev;
    OK(MPI_Compare_and_swap(&seven, &nomatch, &prev, MPI_INT, 0, 2, win));
    CHECK(prev >= 0 && prev < size);
    int no_op_v;
    OK(MPI_Fetch_and_op(NULL, &no_op_v, MPI_INT, 0, 2, MPI_NO_OP, win));
    CHECK(no_op_v == prev);
    OK(MPI_Win_unlock(0, win));
    OK(MPI_Win_free(&win));
}

/* Derived datatypes at the origin and the target: a strided column put
 * into a contiguous row, and accumulated back. */
static void derived(void) {
    enum { R = 4, C = 5 };
    double *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(R * C * sizeof(double), sizeof(double), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    for (int i = 0; i < R * C; i++) mem[i] = 0;
    MPI_Datatype col;
    OK(MPI_Type_vector(R, 1, C, MPI_DOUBLE, &col));
    OK(MPI_Type_commit(&col));
    double a[R * C];
    for (int i = 0; i < R * C; i++) a[i] = rank * 100 + i;
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    OK(MPI_Win_fence(0, win));
    /* Origin: column 1 of a (strided); target: row 0 (contiguous). */
    OK(MPI_Put(&a[1], 1, col, right, 0, R, MPI_DOUBLE, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < R; i++) CHECK(mem[i] == left * 100 + 1 + i * C);
    /* Target: column 4 (strided), accumulated twice with SUM. */
    double ones[R] = {1, 1, 1, 1};
    OK(MPI_Accumulate(ones, R, MPI_DOUBLE, right, 4, 1, col, MPI_SUM, win));
    OK(MPI_Accumulate(ones, R, MPI_DOUBLE, right, 4, 1, col, MPI_SUM, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < R; i++) CHECK(mem[4 + i * C] == 2);
    /* Get a strided column into a strided column. */
    double back[R * C];
    memset(back, 0, sizeof back);
    OK(MPI_Get(&back[2], 1, col, left, 4, 1, col, win));
    OK(MPI_Win_fence(0, win));
    for (int i = 0; i < R; i++) CHECK(back[2 + i * C] == 2 && back[1 + i * C] == 0);
    MPI_Type_free(&col);
    OK(MPI_Win_free(&win));
}

/* Shared windows: each rank writes its part; every rank reads all through
 * the pointers of Win_shared_query. Names and info. */
static void shared(void) {
    MPI_Comm node;
    OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int nr, ns;
    MPI_Comm_rank(node, &nr);
    MPI_Comm_size(node, &ns);
    int *mine;
    MPI_Win win;
    OK(MPI_Win_allocate_shared((nr + 1) * sizeof(int), sizeof(int), MPI_INFO_NULL, node, &mine, &win));
    OK(MPI_Win_lock_all(0, win));
    for (int i = 0; i <= nr; i++) mine[i] = nr * 10 + i;
    OK(MPI_Win_sync(win));
    MPI_Barrier(node);
    OK(MPI_Win_sync(win));
    for (int r = 0; r < ns; r++) {
        MPI_Aint sz;
        int du;
        int *p;
        OK(MPI_Win_shared_query(win, r, &sz, &du, &p));
        CHECK(sz == (r + 1) * (MPI_Aint)sizeof(int) && du == (int)sizeof(int));
        for (int i = 0; i <= r; i++) CHECK(p[i] == r * 10 + i);
    }
    OK(MPI_Win_unlock_all(win));
    OK(MPI_Win_set_name(win, "shared one"));
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    OK(MPI_Win_get_name(win, name, &len));
    CHECK(len == 10 && strcmp(name, "shared one") == 0);
    MPI_Info info;
    OK(MPI_Info_create(&info));
    OK(MPI_Info_set(info, "no_locks", "false"));
    OK(MPI_Win_set_info(win, info));
    MPI_Info_free(&info);
    OK(MPI_Win_get_info(win, &info));
    int nk;
    OK(MPI_Info_get_nkeys(info, &nk));
    CHECK(nk == 1);
    MPI_Info_free(&info);
    int *flavor, flag;
    OK(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
    CHECK(flag && *flavor == MPI_WIN_FLAVOR_SHARED);
    OK(MPI_Win_free(&win));
    MPI_Comm_free(&node);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    fence_put_get(1);
    fence_put_get(0);
    pscw();
    passive();
    accumulates();
    atomics();
    derived();
    shared();
    report_ok("rma_ops");
    MPI_Finalize();
    return 0;
}
