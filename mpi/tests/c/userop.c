/* User operations: a commutative one (sum of ints) and a non-commutative
 * one (composition of affine maps x -> a x + b, as MPI_2INT pairs), through
 * Reduce, Allreduce, Scan, Exscan and Reduce_scatter_block; the datatype
 * handle reaches the function; Op_free, Op_commutative, and a freed op is
 * MPI_ERR_OP. */
#include "check.h"

static int bad_type = 0, calls = 0;

static void my_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    if (*dt != MPI_INT) bad_type = 1;
    calls++;
    for (int i = 0; i < *len; i++) ((int *)inout)[i] += ((int *)in)[i];
}

typedef struct { int a, b; } affine;

/* inout = in then inout: x -> inout.a (in.a x + in.b) + inout.b. */
static void compose(void *in, void *inout, int *len, MPI_Datatype *dt) {
    if (*dt != MPI_2INT) bad_type = 1;
    affine *x = in, *y = inout;
    for (int i = 0; i < *len; i++) {
        affine r = {x[i].a * y[i].a, x[i].b * y[i].a + y[i].b};
        y[i] = r;
    }
}

/* Rank r's map for element i. */
static affine mine(int r, int i) {
    affine m = {1 + (r + i) % 2, r + 1 + i};
    return m;
}

/* Ranks lo..hi composed in order, element i. */
static affine chain(int lo, int hi, int i) {
    affine acc = mine(lo, i);
    for (int r = lo + 1; r <= hi; r++) {
        affine m = mine(r, i);
        affine n = {acc.a * m.a, acc.b * m.a + m.b};
        acc = n;
    }
    return acc;
}

#define N 3

int main(int argc, char **argv) {
    int rank, size, flag;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

    MPI_Op sum, comp;
    OK(MPI_Op_create(my_sum, 1, &sum));
    OK(MPI_Op_create(compose, 0, &comp));
    OK(MPI_Op_commutative(sum, &flag));
    CHECK(flag == 1);
    OK(MPI_Op_commutative(comp, &flag));
    CHECK(flag == 0);
    OK(MPI_Op_commutative(MPI_SUM, &flag));
    CHECK(flag == 1);

    /* Commutative sum. */
    int v[N], s[N];
    for (int i = 0; i < N; i++) v[i] = rank * 10 + i;
    OK(MPI_Allreduce(v, s, N, MPI_INT, sum, MPI_COMM_WORLD));
    for (int i = 0; i < N; i++) CHECK(s[i] == 10 * size * (size - 1) / 2 + i * size);
    int root = size - 1;
    for (int i = 0; i < N; i++) s[i] = -1;
    OK(MPI_Reduce(v, s, N, MPI_INT, sum, root, MPI_COMM_WORLD));
    if (rank == root)
        for (int i = 0; i < N; i++) CHECK(s[i] == 10 * size * (size - 1) / 2 + i * size);
    /* In place. */
    for (int i = 0; i < N; i++) s[i] = v[i];
    OK(MPI_Allreduce(MPI_IN_PLACE, s, N, MPI_INT, sum, MPI_COMM_WORLD));
    CHECK(s[0] == 10 * size * (size - 1) / 2);
    CHECK(size == 1 || calls > 0);

    /* Non-commutative: the result is in rank order. */
    affine m[N], r[N];
    for (int i = 0; i < N; i++) m[i] = mine(rank, i);
    OK(MPI_Allreduce(m, r, N, MPI_2INT, comp, MPI_COMM_WORLD));
    for (int i = 0; i < N; i++) {
        affine w = chain(0, size - 1, i);
        CHECK(r[i].a == w.a && r[i].b == w.b);
    }
    OK(MPI_Reduce(m, r, N, MPI_2INT, comp, 0, MPI_COMM_WORLD));
    if (rank == 0)
        for (int i = 0; i < N; i++) {
            affine w = chain(0, size - 1, i);
            CHECK(r[i].a == w.a && r[i].b == w.b);
        }
    /* At another root: still in rank order (a tree rooted there would not be). */
    for (int root2 = 1; root2 < size; root2++) {
        OK(MPI_Reduce(m, r, N, MPI_2INT, comp, root2, MPI_COMM_WORLD));
        if (rank == root2)
            for (int i = 0; i < N; i++) {
                affine w = chain(0, size - 1, i);
                CHECK(r[i].a == w.a && r[i].b == w.b);
            }
    }
    OK(MPI_Scan(m, r, N, MPI_2INT, comp, MPI_COMM_WORLD));
    for (int i = 0; i < N; i++) {
        affine w = chain(0, rank, i);
        CHECK(r[i].a == w.a && r[i].b == w.b);
    }
    OK(MPI_Exscan(m, r, N, MPI_2INT, comp, MPI_COMM_WORLD));
    if (rank > 0)
        for (int i = 0; i < N; i++) {
            affine w = chain(0, rank - 1, i);
            CHECK(r[i].a == w.a && r[i].b == w.b);
        }
    /* Reduce_scatter_block: one element per rank. */
    affine all[64], one;
    for (int i = 0; i < size; i++) all[i] = mine(rank, i);
    OK(MPI_Reduce_scatter_block(all, &one, 1, MPI_2INT, comp, MPI_COMM_WORLD));
    {
        affine w = chain(0, size - 1, rank);
        CHECK(one.a == w.a && one.b == w.b);
    }
    CHECK(!bad_type);

    /* Free: the handle becomes MPI_OP_NULL; a freed op is invalid. */
    MPI_Op keep = sum;
    OK(MPI_Op_free(&sum));
    CHECK(sum == MPI_OP_NULL);
    FAILS(MPI_ERR_OP, MPI_Allreduce(v, s, N, MPI_INT, keep, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Op_free(&keep));
    MPI_Op predefined = MPI_SUM;
    FAILS(MPI_ERR_OP, MPI_Op_free(&predefined));
    FAILS(MPI_ERR_ARG, MPI_Op_create(NULL, 1, &keep));
    OK(MPI_Op_free(&comp));

    report_ok("userop");
    OK(MPI_Finalize());
    return 0;
}
