/* One-sided accumulates beyond one predefined type on one side: derived
 * datatypes on both sides (a vector of int, an indexed type), `long double`
 * (sum, Fetch_and_op, MAXLOC on MPI_LONG_DOUBLE_INT) and derived types of
 * the padded pair types (vectors of MPI_DOUBLE_INT and MPI_LONG_DOUBLE_INT
 * with MINLOC/MAXLOC); and MPI_Win_get_name of MPI_WIN_NULL. Every rank
 * accumulates into rank 0; the results are checked against what the ranks
 * sent. Runs on any number of ranks. */
#include <string.h>
#include "check.h"

#define N 8

static int rank, size;

typedef struct {
    double v;
    int i;
} dint;

typedef struct {
    long double v;
    int i;
} ldint;

/* Sum of r + 1 over the ranks. */
static int ranks_sum(void) { return size * (size + 1) / 2; }

/* Vectors of int on both sides (every other int), MPI_SUM, then a
 * Get_accumulate with derived origin, result and target types. */
static void derived_both_sides(int allocate) {
    int *mem = NULL, *own = NULL;
    MPI_Win win;
    if (allocate) {
        OK(MPI_Win_allocate(2 * N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    } else {
        own = calloc(2 * N, sizeof(int));
        OK(MPI_Win_create(own, 2 * N * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        mem = own;
    }
    for (int i = 0; i < 2 * N; i++) mem[i] = -1;
    MPI_Datatype vec, idx;
    OK(MPI_Type_vector(N, 1, 2, MPI_INT, &vec));
    OK(MPI_Type_commit(&vec));
    int lens[2] = {3, N - 3}, displs[2] = {0, 2 * N - (N - 3) - 1};
    OK(MPI_Type_indexed(2, lens, displs, MPI_INT, &idx));
    OK(MPI_Type_commit(&idx));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0)
        for (int i = 0; i < 2 * N; i++) mem[i] = 0;
    OK(MPI_Barrier(MPI_COMM_WORLD));

    int src[2 * N];
    for (int i = 0; i < 2 * N; i++) src[i] = (i % 2 == 0) ? (rank + 1) * (i / 2 + 1) : 7777;
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    OK(MPI_Accumulate(src, 1, vec, 0, 0, 1, vec, MPI_SUM, win));
    OK(MPI_Win_unlock(0, win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        for (int i = 0; i < N; i++) {
            CHECK(mem[2 * i] == ranks_sum() * (i + 1));
            CHECK(mem[2 * i + 1] == 0);
        }
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* Get_accumulate MPI_MAX: origin a vector, target the same, result an
     * indexed type; the results are what was there before each update. */
    int res[2 * N];
    for (int i = 0; i < 2 * N; i++) res[i] = -5;
    for (int i = 0; i < 2 * N; i++) src[i] = (i % 2 == 0) ? 1000 * (rank + 1) : -9;
    OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
    OK(MPI_Get_accumulate(src, 1, vec, res, 1, idx, 0, 0, 1, vec, MPI_MAX, win));
    OK(MPI_Win_unlock(0, win));
    /* The results land at the indexed type's places, in order. */
    for (int k = 0, j = 0; k < 2; k++)
        for (int b = 0; b < lens[k]; b++, j++) {
            int v = res[displs[k] + b];
            CHECK(v == ranks_sum() * (j + 1) || (v >= 1000 && v <= 1000 * size && v % 1000 == 0));
        }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0)
        for (int i = 0; i < N; i++) CHECK(mem[2 * i] == (1000 * size > ranks_sum() * (i + 1) ? 1000 * size : ranks_sum() * (i + 1)));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Type_free(&vec));
    OK(MPI_Type_free(&idx));
    OK(MPI_Win_free(&win));
    free(own);
}

/* long double: MPI_SUM accumulates, Fetch_and_op, MAXLOC on the pair. */
static void long_double(void) {
    long double *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(N * sizeof(long double), sizeof(long double), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    ldint *pairs = calloc(N, sizeof(ldint));
    MPI_Win pwin;
    OK(MPI_Win_create(pairs, N * sizeof(ldint), sizeof(ldint), MPI_INFO_NULL, MPI_COMM_WORLD, &pwin));
    for (int i = 0; i < N; i++) {
        mem[i] = 0.0L;
        pairs[i].v = -1.0L;
        pairs[i].i = -1;
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));

    long double src[N];
    /* 2^-60 is lost in a double sum with 1, kept in a long double one. */
    long double tiny = 1.0L / (1024.0L * 1024.0L * 1024.0L * 1024.0L * 1024.0L * 1024.0L);
    for (int i = 0; i < N; i++) src[i] = (long double)(rank + 1) + (i == 0 ? tiny : 0.0L);
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    OK(MPI_Accumulate(src, N, MPI_LONG_DOUBLE, 0, 0, N, MPI_LONG_DOUBLE, MPI_SUM, win));
    OK(MPI_Win_unlock(0, win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        CHECK(mem[0] == (long double)ranks_sum() + size * tiny);
        for (int i = 1; i < N; i++) CHECK(mem[i] == (long double)ranks_sum());
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));

    long double one = 1.0L, old = -1.0L;
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    OK(MPI_Fetch_and_op(&one, &old, MPI_LONG_DOUBLE, 0, 1, MPI_SUM, win));
    OK(MPI_Win_unlock(0, win));
    CHECK(old >= (long double)ranks_sum() && old < (long double)(ranks_sum() + size));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) CHECK(mem[1] == (long double)(ranks_sum() + size));
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* MAXLOC on MPI_LONG_DOUBLE_INT, predefined on both sides: the largest
     * value at element 0 is rank size-1's; ties at element 1 go to the
     * smallest index. */
    ldint mine[2];
    mine[0].v = 10.0L * rank;
    mine[0].i = rank;
    mine[1].v = 3.0L;
    mine[1].i = 100 + rank;
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, pwin));
    OK(MPI_Accumulate(mine, 2, MPI_LONG_DOUBLE_INT, 0, 0, 2, MPI_LONG_DOUBLE_INT, MPI_MAXLOC, pwin));
    OK(MPI_Win_unlock(0, pwin));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) {
        CHECK(pairs[0].v == 10.0L * (size - 1) && pairs[0].i == size - 1);
        CHECK(pairs[1].v == 3.0L && pairs[1].i == 100);
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));

    /* A vector of MPI_LONG_DOUBLE_INT on both sides (every other pair),
     * MINLOC, into a fresh window. */
    if (rank == 0)
        for (int i = 0; i < N; i++) {
            pairs[i].v = 1000.0L;
            pairs[i].i = -1;
        }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    MPI_Datatype vec;
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_LONG_DOUBLE_INT, &vec));
    OK(MPI_Type_commit(&vec));
    ldint o[N];
    for (int i = 0; i < N; i++) {
        o[i].v = (i % 2 == 0) ? (long double)(size - rank + i) : -50.0L;
        o[i].i = rank;
    }
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, pwin));
    OK(MPI_Accumulate(o, 1, vec, 0, 0, 1, vec, MPI_MINLOC, pwin));
    OK(MPI_Win_unlock(0, pwin));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0)
        for (int i = 0; i < N; i++) {
            if (i % 2 == 0) {
                CHECK(pairs[i].v == (long double)(1 + i) && pairs[i].i == size - 1);
            } else {
                CHECK(pairs[i].v == 1000.0L && pairs[i].i == -1);
            }
        }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    OK(MPI_Type_free(&vec));
    OK(MPI_Win_free(&pwin));
    OK(MPI_Win_free(&win));
    free(pairs);
}

/* A vector of MPI_DOUBLE_INT: MAXLOC accumulates, then Get_accumulate with
 * a contiguous result of the predefined pair. */
static void double_int_vectors(void) {
    dint *mem;
    MPI_Win win;
    OK(MPI_Win_allocate(N * sizeof(dint), sizeof(dint), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
    for (int i = 0; i < N; i++) {
        mem[i].v = -1.0;
        mem[i].i = -1;
    }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    MPI_Datatype vec;
    OK(MPI_Type_vector(N / 2, 1, 2, MPI_DOUBLE_INT, &vec));
    OK(MPI_Type_commit(&vec));
    dint o[N];
    for (int i = 0; i < N; i++) {
        o[i].v = (double)(rank * 10 + i);
        o[i].i = rank;
    }
    OK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    OK(MPI_Accumulate(o, 1, vec, 0, 0, 1, vec, MPI_MAXLOC, win));
    OK(MPI_Win_unlock(0, win));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0)
        for (int i = 0; i < N; i++) {
            if (i % 2 == 0) {
                CHECK(mem[i].v == (double)((size - 1) * 10 + i) && mem[i].i == size - 1);
            } else {
                CHECK(mem[i].v == -1.0 && mem[i].i == -1);
            }
        }
    OK(MPI_Barrier(MPI_COMM_WORLD));
    dint res[N / 2], big[N];
    for (int i = 0; i < N; i++) {
        big[i].v = 1e9;
        big[i].i = rank;
    }
    OK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, win));
    OK(MPI_Get_accumulate(big, 1, vec, res, N / 2, MPI_DOUBLE_INT, 0, 0, 1, vec, MPI_MINLOC, win));
    OK(MPI_Win_unlock(0, win));
    for (int k = 0; k < N / 2; k++) CHECK(res[k].v == (double)((size - 1) * 10 + 2 * k) && res[k].i == size - 1);
    OK(MPI_Type_free(&vec));
    OK(MPI_Win_free(&win));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    char name[MPI_MAX_OBJECT_NAME];
    int len = -1;
    OK(MPI_Win_get_name(MPI_WIN_NULL, name, &len));
    CHECK(strcmp(name, "MPI_WIN_NULL") == 0 && len == (int)strlen("MPI_WIN_NULL"));

    /* An empty derived type on both sides: nothing moves, no error. */
    {
        MPI_Datatype none;
        MPI_Win win;
        int *mem, one = 1, res = 7;
        OK(MPI_Type_contiguous(0, MPI_INT, &none));
        OK(MPI_Type_commit(&none));
        OK(MPI_Win_allocate(sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mem, &win));
        OK(MPI_Win_fence(0, win));
        OK(MPI_Accumulate(&one, 1, none, 0, 0, 1, none, MPI_SUM, win));
        OK(MPI_Get_accumulate(&one, 1, none, &res, 1, none, 0, 0, 1, none, MPI_SUM, win));
        OK(MPI_Win_fence(0, win));
        CHECK(res == 7);
        OK(MPI_Win_free(&win));
        OK(MPI_Type_free(&none));
    }

    derived_both_sides(0);
    derived_both_sides(1);
    long_double();
    double_int_vectors();
    report_ok("rma_derived_acc");
    MPI_Finalize();
    return 0;
}
