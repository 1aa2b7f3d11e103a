/* Reductions the typed path cannot walk, and long double.
 *
 * - A user operation on a datatype with holes: 2x2 integer matrices stored
 *   every other int (a vector type), multiplied (associative, not
 *   commutative) in rank order by Allreduce, Reduce, Scan, Exscan,
 *   Reduce_scatter(_block) and Reduce_local, against a serial product; the
 *   function checks that it is handed the type itself and the layout (the
 *   holes of the program's buffers are never written).
 * - A user operation on a struct of mixed types {int; double}.
 * - MPI_SUM/MPI_MAX on MPI_LONG_DOUBLE with values that need the 64-bit
 *   significand, MPI_PROD on MPI_C_LONG_DOUBLE_COMPLEX and MPI_MAXLOC on
 *   MPI_LONG_DOUBLE_INT, against the C compiler's own long double. */
#include <complex.h>
#include <stddef.h>
#include <string.h>
#include "check.h"

static int rank, size;
static MPI_Datatype mat; /* 4 ints at stride 2: a[0] a[2] a[4] a[6] */

/* inout = in * inout, for len matrices laid out as `mat`. */
static void matmul(void *in, void *inout, int *len, MPI_Datatype *dt) {
    CHECK(*dt == mat);
    MPI_Aint lb, ext;
    MPI_Type_get_extent(*dt, &lb, &ext);
    for (int k = 0; k < *len; k++) {
        const int *a = (const int *)((char *)in + k * ext);
        int *b = (int *)((char *)inout + k * ext);
        int r0 = a[0] * b[0] + a[2] * b[4], r1 = a[0] * b[2] + a[2] * b[6];
        int r2 = a[4] * b[0] + a[6] * b[4], r3 = a[4] * b[2] + a[6] * b[6];
        b[0] = r0, b[2] = r1, b[4] = r2, b[6] = r3;
    }
}

/* Rank r's k-th matrix: [[r+1+k, 1], [1, 0]] (no two commute). */
static void mine(int r, int k, int *m) { m[0] = r + 1 + k, m[2] = 1, m[4] = 1, m[6] = 0; }

/* The product of ranks lo..hi-1's k-th matrices in rank order. */
static void serial(int lo, int hi, int k, int *out) {
    int acc[8] = {1, 0, 0, 0, 0, 0, 1, 0}, m[8];
    for (int r = lo; r < hi; r++) {
        int len = 1;
        memcpy(m, acc, sizeof m);
        int x[8];
        mine(r, k, x);
        matmul(m, x, &len, &mat); /* x = acc * x */
        memcpy(acc, x, sizeof acc);
    }
    memcpy(out, acc, sizeof acc);
}

#define K 3
/* K matrices of 8 ints; the odd slots are holes holding `hole`. */
static void fill(int *buf, int k0, int n, int hole) {
    for (int k = 0; k < n; k++) {
        int *m = buf + 8 * k;
        for (int j = 0; j < 8; j++) m[j] = hole;
        mine(rank, k0 + k, m);
    }
}

static void same(const int *got, const int *want, int hole) {
    for (int j = 0; j < 8; j += 2) CHECK(got[j] == want[j]);
    for (int j = 1; j < 8; j += 2) CHECK(got[j] == hole);
}

/* On a dense derived type the function still gets that type and a count
 * of its elements (not MPI_INT and three times the count). */
static MPI_Datatype tri;
static void trimax(void *in, void *inout, int *len, MPI_Datatype *dt) {
    CHECK(*dt == tri);
    for (int k = 0; k < *len; k++) {
        const int *a = (const int *)in + 3 * k;
        int *b = (int *)inout + 3 * k;
        /* lexicographic max of the triples (associative, commutative) */
        if (a[0] > b[0] || (a[0] == b[0] && (a[1] > b[1] || (a[1] == b[1] && a[2] > b[2]))))
            b[0] = a[0], b[1] = a[1], b[2] = a[2];
    }
}

typedef struct { int n; double x; } nx_t;
static void nxsum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    for (int k = 0; k < *len; k++) {
        ((nx_t *)inout)[k].n += ((nx_t *)in)[k].n;
        ((nx_t *)inout)[k].x += ((nx_t *)in)[k].x;
    }
}

static void user_ops_on_holes(void) {
    MPI_Datatype v;
    OK(MPI_Type_vector(4, 1, 2, MPI_INT, &v));
    OK(MPI_Type_create_resized(v, 0, 8 * sizeof(int), &mat));
    OK(MPI_Type_commit(&mat));
    OK(MPI_Type_free(&v));
    MPI_Op op;
    OK(MPI_Op_create(matmul, 0, &op));
    int s[8 * K], r[8 * K], want[8];

    /* Allreduce, and in place. */
    fill(s, 0, K, -5);
    for (int j = 0; j < 8 * K; j++) r[j] = -7;
    OK(MPI_Allreduce(s, r, K, mat, op, MPI_COMM_WORLD));
    for (int k = 0; k < K; k++) serial(0, size, k, want), same(r + 8 * k, want, -7);
    fill(r, 0, K, -9);
    OK(MPI_Allreduce(MPI_IN_PLACE, r, K, mat, op, MPI_COMM_WORLD));
    for (int k = 0; k < K; k++) serial(0, size, k, want), same(r + 8 * k, want, -9);

    /* Reduce to the last rank. */
    int root = size - 1;
    for (int j = 0; j < 8 * K; j++) r[j] = -7;
    OK(MPI_Reduce(s, r, K, mat, op, root, MPI_COMM_WORLD));
    if (rank == root)
        for (int k = 0; k < K; k++) serial(0, size, k, want), same(r + 8 * k, want, -7);
    else
        for (int j = 0; j < 8 * K; j++) CHECK(r[j] == -7);

    /* Scan and Exscan. */
    for (int j = 0; j < 8 * K; j++) r[j] = -7;
    OK(MPI_Scan(s, r, K, mat, op, MPI_COMM_WORLD));
    for (int k = 0; k < K; k++) serial(0, rank + 1, k, want), same(r + 8 * k, want, -7);
    for (int j = 0; j < 8 * K; j++) r[j] = -7;
    OK(MPI_Exscan(s, r, K, mat, op, MPI_COMM_WORLD));
    if (rank > 0)
        for (int k = 0; k < K; k++) serial(0, rank, k, want), same(r + 8 * k, want, -7);
    else
        for (int j = 0; j < 8 * K; j++) CHECK(r[j] == -7);

    /* Reduce_scatter_block: one matrix per rank; Reduce_scatter: rank i
     * gets i % 2 + 1 matrices. */
    int *big = malloc(8 * 2 * size * sizeof(int)), *rs = malloc(8 * 2 * sizeof(int));
    for (int k = 0; k < 2 * size; k++) {
        for (int j = 0; j < 8; j++) big[8 * k + j] = -5;
        mine(rank, k, big + 8 * k);
    }
    for (int j = 0; j < 16; j++) rs[j] = -7;
    OK(MPI_Reduce_scatter_block(big, rs, 1, mat, op, MPI_COMM_WORLD));
    serial(0, size, rank, want);
    same(rs, want, -7);
    int *counts = malloc(size * sizeof(int)), first = 0;
    for (int i = 0; i < size; i++) {
        counts[i] = i % 2 + 1;
        if (i < rank) first += counts[i];
    }
    for (int j = 0; j < 16; j++) rs[j] = -7;
    OK(MPI_Reduce_scatter(big, rs, counts, mat, op, MPI_COMM_WORLD));
    for (int k = 0; k < counts[rank]; k++) serial(0, size, first + k, want), same(rs + 8 * k, want, -7);
    free(big), free(rs), free(counts);

    /* Reduce_local: inout = in * inout on this rank only. */
    int a[8] = {2, -1, 1, -1, 1, -1, 0, -1}, b[8] = {3, -2, 1, -2, 1, -2, 0, -2};
    OK(MPI_Reduce_local(a, b, 1, mat, op));
    CHECK(b[0] == 7 && b[2] == 2 && b[4] == 3 && b[6] == 1 && b[1] == -2 && b[7] == -2);

    OK(MPI_Op_free(&op));
    OK(MPI_Type_free(&mat));

    /* A dense derived type: 5 triples, a user op over triples. */
    OK(MPI_Type_contiguous(3, MPI_INT, &tri));
    OK(MPI_Type_commit(&tri));
    OK(MPI_Op_create(trimax, 1, &op));
    int t3[15], m3[16];
    for (int k = 0; k < 5; k++) t3[3 * k] = k, t3[3 * k + 1] = rank % 2, t3[3 * k + 2] = rank;
    m3[15] = -3;
    OK(MPI_Allreduce(t3, m3, 5, tri, op, MPI_COMM_WORLD));
    int top1 = size > 1 ? 1 : 0, top2 = size > 1 ? (size % 2 == 0 ? size - 1 : size - 2) : 0;
    for (int k = 0; k < 5; k++) CHECK(m3[3 * k] == k && m3[3 * k + 1] == top1 && m3[3 * k + 2] == top2);
    CHECK(m3[15] == -3);
    OK(MPI_Op_free(&op));
    OK(MPI_Type_free(&tri));

    /* A struct of mixed types. */
    int bl[2] = {1, 1};
    MPI_Aint dp[2] = {offsetof(nx_t, n), offsetof(nx_t, x)};
    MPI_Datatype ty[2] = {MPI_INT, MPI_DOUBLE}, nx;
    OK(MPI_Type_create_struct(2, bl, dp, ty, &nx));
    OK(MPI_Type_commit(&nx));
    OK(MPI_Op_create(nxsum, 1, &op));
    nx_t me[2] = {{rank, 0.5 * rank}, {1, 1.0}}, sum[2];
    OK(MPI_Allreduce(me, sum, 2, nx, op, MPI_COMM_WORLD));
    CHECK(sum[0].n == size * (size - 1) / 2 && sum[0].x == 0.25 * size * (size - 1));
    CHECK(sum[1].n == size && sum[1].x == size);
    OK(MPI_Op_free(&op));
    OK(MPI_Type_free(&nx));
}

static void long_double(void) {
    /* 1 + 2^-60 is not a double; n of them sum exactly in long double. */
    long double one = 1.0L + 0x1p-60L, x = one * (rank + 1), sum = 0, want = 0;
    for (int r = 0; r < size; r++) want += one * (r + 1);
    OK(MPI_Allreduce(&x, &sum, 1, MPI_LONG_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    CHECK(sum == want && sum != (long double)(double)want);
    long double mx = 0;
    OK(MPI_Allreduce(&x, &mx, 1, MPI_LONG_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    CHECK(mx == one * size);
    long double mn = 0, neg = -x;
    OK(MPI_Allreduce(&neg, &mn, 1, MPI_LONG_DOUBLE, MPI_MIN, MPI_COMM_WORLD));
    CHECK(mn == -one * size);
    /* (1 + i)^n in long double complex. */
    long double _Complex z = 1.0L + 1.0L * I, p = 0, zw = 1;
    for (int r = 0; r < size; r++) zw *= z;
    OK(MPI_Allreduce(&z, &p, 1, MPI_C_LONG_DOUBLE_COMPLEX, MPI_PROD, MPI_COMM_WORLD));
    CHECK(p == zw);
    /* MAXLOC on {long double; int}. */
    struct { long double v; int i; } li = {(rank % 2) * one, rank}, lo;
    OK(MPI_Allreduce(&li, &lo, 1, MPI_LONG_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD));
    CHECK(lo.v == (size > 1 ? one : 0) && lo.i == (size > 1 ? 1 : 0));
    /* Bitwise operations stay undefined on it. */
    FAILS(MPI_ERR_OP, MPI_Allreduce(&x, &sum, 1, MPI_LONG_DOUBLE, MPI_BAND, MPI_COMM_WORLD));
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    user_ops_on_holes();
    long_double();
    report_ok("types_userop");
    OK(MPI_Finalize());
    return 0;
}
