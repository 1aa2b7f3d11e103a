/* Datatype layouts beyond the basic constructors:
 * - MPI_Type_create_darray against a serial model of the HPF
 *   distributions (block, cyclic(k), none; C and Fortran order), for every
 *   rank of several process grids: each rank packs exactly the elements it
 *   owns, in memory order, and the ranks' parts cover the array once;
 * - external32 (MPI_Pack_external...): big-endian bytes, the standard's
 *   sizes (MPI_LONG is 4 bytes there), round trips of a vector type and of
 *   long double;
 * - MPI_Type_match_size, MPI_Type_create_f90_* and their envelopes;
 * - the large-count _c constructors and MPI_Status_set_elements;
 * - MPI_Pack/MPI_Unpack from MPI_BOTTOM with absolute addresses. */
#include <string.h>
#include "check.h"

#define MAXD 3

/* Owner coordinate of global index g along one dimension. */
static int owner(int g, int gsize, int distrib, int darg, int psize) {
    if (distrib == MPI_DISTRIBUTE_NONE) return 0;
    if (distrib == MPI_DISTRIBUTE_BLOCK) {
        int b = darg == MPI_DISTRIBUTE_DFLT_DARG ? (gsize + psize - 1) / psize : darg;
        return g / b;
    }
    int b = darg == MPI_DISTRIBUTE_DFLT_DARG ? 1 : darg;
    return (g / b) % psize;
}

/* Checks darray for every rank of the grid against the model. */
static void darray_case(int nd, const int *gs, const int *ds, const int *as, const int *ps,
                        int order) {
    int total = 1, procs = 1;
    for (int d = 0; d < nd; d++) total *= gs[d], procs *= ps[d];
    int *a = malloc(total * sizeof(int)), *seen = calloc(total, sizeof(int));
    int *packed = malloc((total + 1) * sizeof(int));
    for (int i = 0; i < total; i++) a[i] = i;
    for (int r = 0; r < procs; r++) {
        MPI_Datatype t;
        OK(MPI_Type_create_darray(procs, r, nd, gs, ds, as, ps, order, MPI_INT, &t));
        OK(MPI_Type_commit(&t));
        MPI_Aint lb, ext;
        OK(MPI_Type_get_extent(t, &lb, &ext));
        CHECK(lb == 0 && ext == (MPI_Aint)(total * sizeof(int)));
        /* The process grid is row-major whatever the order. */
        int coords[MAXD], rem = r;
        for (int d = nd - 1; d >= 0; d--) coords[d] = rem % ps[d], rem /= ps[d];
        /* Expected: owned linear indices in memory order (increasing). */
        int want = 0;
        for (int i = 0; i < total; i++) {
            int idx[MAXD], rest = i, mine = 1;
            if (order == MPI_ORDER_C)
                for (int d = nd - 1; d >= 0; d--) idx[d] = rest % gs[d], rest /= gs[d];
            else
                for (int d = 0; d < nd; d++) idx[d] = rest % gs[d], rest /= gs[d];
            for (int d = 0; d < nd; d++)
                if (owner(idx[d], gs[d], ds[d], as[d], ps[d]) != coords[d]) mine = 0;
            if (mine) packed[want++] = i;
        }
        int sz = -1;
        OK(MPI_Type_size(t, &sz));
        CHECK(sz == want * (int)sizeof(int));
        int *out = malloc((want + 1) * sizeof(int)), pos = 0;
        OK(MPI_Pack(a, 1, t, out, (want + 1) * sizeof(int), &pos, MPI_COMM_SELF));
        CHECK(pos == want * (int)sizeof(int));
        for (int k = 0; k < want; k++) {
            CHECK(out[k] == packed[k]);
            seen[out[k]]++;
        }
        free(out);
        OK(MPI_Type_free(&t));
    }
    for (int i = 0; i < total; i++) CHECK(seen[i] == 1);
    free(a), free(seen), free(packed);
}

static void darrays(void) {
    const int DB = MPI_DISTRIBUTE_BLOCK, DC = MPI_DISTRIBUTE_CYCLIC, DN = MPI_DISTRIBUTE_NONE,
              DD = MPI_DISTRIBUTE_DFLT_DARG;
    { int g[2] = {9, 7}, d[2] = {DB, DB}, a[2] = {DD, DD}, p[2] = {3, 2};
      darray_case(2, g, d, a, p, MPI_ORDER_C);
      darray_case(2, g, d, a, p, MPI_ORDER_FORTRAN); }
    { int g[2] = {10, 6}, d[2] = {DC, DC}, a[2] = {2, DD}, p[2] = {2, 3};
      darray_case(2, g, d, a, p, MPI_ORDER_C);
      darray_case(2, g, d, a, p, MPI_ORDER_FORTRAN); }
    { int g[3] = {4, 5, 6}, d[3] = {DB, DN, DC}, a[3] = {DD, DD, 2}, p[3] = {2, 1, 2};
      darray_case(3, g, d, a, p, MPI_ORDER_C);
      darray_case(3, g, d, a, p, MPI_ORDER_FORTRAN); }
    /* Block with an explicit block size leaving the last process empty. */
    { int g[1] = {7}, d[1] = {DB}, a[1] = {4}, p[1] = {3};
      darray_case(1, g, d, a, p, MPI_ORDER_C); }
    /* Errors: a grid of the wrong size, NONE over several processes, and
     * blocks that do not cover the dimension. */
    MPI_Datatype t;
    { int g[1] = {8}, d[1] = {DB}, a[1] = {DD}, p[1] = {3};
      FAILS(MPI_ERR_ARG, MPI_Type_create_darray(4, 0, 1, g, d, a, p, MPI_ORDER_C, MPI_INT, &t)); }
    { int g[1] = {8}, d[1] = {DN}, a[1] = {DD}, p[1] = {2};
      FAILS(MPI_ERR_ARG, MPI_Type_create_darray(2, 0, 1, g, d, a, p, MPI_ORDER_C, MPI_INT, &t)); }
    { int g[1] = {8}, d[1] = {DB}, a[1] = {3}, p[1] = {2};
      FAILS(MPI_ERR_ARG, MPI_Type_create_darray(2, 1, 1, g, d, a, p, MPI_ORDER_C, MPI_INT, &t)); }
    /* The envelope. */
    { int g[2] = {4, 4}, d[2] = {DB, DC}, a[2] = {DD, 1}, p[2] = {2, 2};
      OK(MPI_Type_create_darray(4, 3, 2, g, d, a, p, MPI_ORDER_C, MPI_INT, &t));
      int ni, na, nt, comb;
      OK(MPI_Type_get_envelope(t, &ni, &na, &nt, &comb));
      CHECK(comb == MPI_COMBINER_DARRAY && ni == 4 * 2 + 4 && na == 0 && nt == 1);
      OK(MPI_Type_free(&t)); }
}

static void external32(void) {
    MPI_Aint sz = -1, pos = 0;
    OK(MPI_Pack_external_size("external32", 3, MPI_INT, &sz));
    CHECK(sz == 12);
    OK(MPI_Pack_external_size("external32", 2, MPI_LONG, &sz));
    CHECK(sz == 8);
    OK(MPI_Pack_external_size("external32", 1, MPI_LONG_DOUBLE, &sz));
    CHECK(sz == 16);
    FAILS(MPI_ERR_ARG, MPI_Pack_external_size("native", 1, MPI_INT, &sz));

    unsigned char buf[64];
    int iv[2] = {0x01020304, -2};
    OK(MPI_Pack_external("external32", iv, 2, MPI_INT, buf, sizeof buf, &pos));
    CHECK(pos == 8);
    const unsigned char want[8] = {1, 2, 3, 4, 0xff, 0xff, 0xff, 0xfe};
    CHECK(memcmp(buf, want, 8) == 0);
    long lv[2] = {-3, 0x11223344};
    OK(MPI_Pack_external("external32", lv, 2, MPI_LONG, buf, sizeof buf, &pos));
    CHECK(pos == 16);
    const unsigned char wl[8] = {0xff, 0xff, 0xff, 0xfd, 0x11, 0x22, 0x33, 0x44};
    CHECK(memcmp(buf + 8, wl, 8) == 0);
    double dv = 1.0;
    OK(MPI_Pack_external("external32", &dv, 1, MPI_DOUBLE, buf, sizeof buf, &pos));
    CHECK(buf[16] == 0x3f && buf[17] == 0xf0 && buf[23] == 0);
    /* Too small an output: MPI_ERR_TRUNCATE. */
    MPI_Aint p2 = 60;
    FAILS(MPI_ERR_TRUNCATE, MPI_Pack_external("external32", iv, 2, MPI_INT, buf, sizeof buf, &p2));
    /* Back. */
    int iback[2] = {0, 0};
    long lback[2] = {0, 0};
    double dback = 0;
    pos = 0;
    OK(MPI_Unpack_external("external32", buf, 24, &pos, iback, 2, MPI_INT));
    OK(MPI_Unpack_external("external32", buf, 24, &pos, lback, 2, MPI_LONG));
    OK(MPI_Unpack_external("external32", buf, 24, &pos, &dback, 1, MPI_DOUBLE));
    CHECK(pos == 24 && iback[0] == iv[0] && iback[1] == -2);
    CHECK(lback[0] == -3 && lback[1] == 0x11223344 && dback == 1.0);

    /* A vector of ints: packed big-endian, unpacked into place. */
    int arr[9], back[9];
    for (int i = 0; i < 9; i++) arr[i] = 0x100 * i + 7, back[i] = -1;
    MPI_Datatype v;
    OK(MPI_Type_vector(3, 1, 3, MPI_INT, &v));
    OK(MPI_Type_commit(&v));
    OK(MPI_Pack_external_size("external32", 1, v, &sz));
    CHECK(sz == 12);
    pos = 0;
    OK(MPI_Pack_external("external32", arr, 1, v, buf, sizeof buf, &pos));
    CHECK(pos == 12 && buf[6] == 0x03 && buf[7] == 0x07); /* arr[3] = 0x307 */
    pos = 0;
    OK(MPI_Unpack_external("external32", buf, 12, &pos, back, 1, v));
    for (int i = 0; i < 9; i++) CHECK(back[i] == (i % 3 == 0 ? arr[i] : -1));
    OK(MPI_Type_free(&v));

    /* long double: binary128 there, exact both ways. */
    long double ld[2] = {1.5L, -3.0e-300L}, ldb[2] = {0, 0};
    pos = 0;
    OK(MPI_Pack_external("external32", ld, 2, MPI_LONG_DOUBLE, buf, sizeof buf, &pos));
    CHECK(pos == 32 && buf[0] == 0x3f && buf[1] == 0xff && buf[2] == 0x80 && buf[3] == 0);
    pos = 0;
    OK(MPI_Unpack_external("external32", buf, 32, &pos, ldb, 2, MPI_LONG_DOUBLE));
    CHECK(ldb[0] == ld[0] && ldb[1] == ld[1]);
}

static void matching_and_f90(void) {
    MPI_Datatype t;
    OK(MPI_Type_match_size(MPI_TYPECLASS_REAL, sizeof(double), &t));
    CHECK(t == MPI_DOUBLE);
    OK(MPI_Type_match_size(MPI_TYPECLASS_REAL, sizeof(long double), &t));
    CHECK(t == MPI_LONG_DOUBLE);
    OK(MPI_Type_match_size(MPI_TYPECLASS_INTEGER, sizeof(int), &t));
    CHECK(t == MPI_INT);
    OK(MPI_Type_match_size(MPI_TYPECLASS_INTEGER, sizeof(long), &t));
    CHECK(t == MPI_LONG);
    OK(MPI_Type_match_size(MPI_TYPECLASS_COMPLEX, 2 * sizeof(double), &t));
    CHECK(t == MPI_C_DOUBLE_COMPLEX);
    FAILS(MPI_ERR_ARG, MPI_Type_match_size(MPI_TYPECLASS_REAL, 3, &t));
    FAILS(MPI_ERR_ARG, MPI_Type_match_size(12345, 4, &t));

    int ni, na, nt, comb, ints[2];
    OK(MPI_Type_create_f90_real(10, MPI_UNDEFINED, &t));
    int sz;
    OK(MPI_Type_size(t, &sz));
    CHECK(sz == 8);
    OK(MPI_Type_get_envelope(t, &ni, &na, &nt, &comb));
    CHECK(comb == MPI_COMBINER_F90_REAL && ni == 2 && na == 0 && nt == 0);
    OK(MPI_Type_get_contents(t, 2, 0, 0, ints, NULL, NULL));
    CHECK(ints[0] == 10 && ints[1] == MPI_UNDEFINED);
    OK(MPI_Type_create_f90_integer(5, &t));
    OK(MPI_Type_size(t, &sz));
    CHECK(sz == 4);
    OK(MPI_Type_get_envelope(t, &ni, &na, &nt, &comb));
    CHECK(comb == MPI_COMBINER_F90_INTEGER && ni == 1);
    OK(MPI_Type_create_f90_complex(6, 30, &t));
    OK(MPI_Type_size(t, &sz));
    CHECK(sz == 8);
    FAILS(MPI_ERR_ARG, MPI_Type_create_f90_real(40, 10, &t));
}

static void large_counts(void) {
    MPI_Datatype t;
    OK(MPI_Type_contiguous_c(5, MPI_INT, &t));
    MPI_Count lb, ext, tlb, text;
    OK(MPI_Type_get_extent_c(t, &lb, &ext));
    OK(MPI_Type_get_true_extent_c(t, &tlb, &text));
    CHECK(lb == 0 && ext == 20 && tlb == 0 && text == 20);
    OK(MPI_Type_free(&t));
    MPI_Count bl[2] = {1, 2}, dp[2] = {8, 0};
    OK(MPI_Type_create_hindexed_c(2, bl, dp, MPI_INT, &t));
    OK(MPI_Type_get_true_extent_c(t, &tlb, &text));
    CHECK(tlb == 0 && text == 12);
    OK(MPI_Type_free(&t));
    MPI_Count ds[2] = {3, 0};
    OK(MPI_Type_create_indexed_block_c(2, 1, ds, MPI_DOUBLE, &t));
    OK(MPI_Type_get_extent_c(t, &lb, &ext));
    CHECK(lb == 0 && ext == 32);
    OK(MPI_Type_free(&t));

    /* Status_set_elements: whole elements and a partial one. */
    MPI_Status st;
    memset(&st, 0, sizeof st);
    OK(MPI_Status_set_elements(&st, MPI_INT, 7));
    int n;
    OK(MPI_Get_count(&st, MPI_INT, &n));
    CHECK(n == 7);
    MPI_Count nx;
    OK(MPI_Status_set_elements_x(&st, MPI_DOUBLE_INT, 3));
    OK(MPI_Get_elements_c(&st, MPI_DOUBLE_INT, &nx));
    CHECK(nx == 3);
    OK(MPI_Get_count(&st, MPI_DOUBLE_INT, &n));
    CHECK(n == MPI_UNDEFINED);
    FAILS(MPI_ERR_COUNT, MPI_Status_set_elements_c(&st, MPI_INT, -1));
}

static void bottom(void) {
    /* A struct over two separate variables by absolute address. */
    int a = 11;
    double b = 2.5;
    MPI_Aint aa, ab;
    OK(MPI_Get_address(&a, &aa));
    OK(MPI_Get_address(&b, &ab));
    int bl[2] = {1, 1};
    MPI_Aint dp[2] = {aa, ab};
    MPI_Datatype ty[2] = {MPI_INT, MPI_DOUBLE}, t;
    OK(MPI_Type_create_struct(2, bl, dp, ty, &t));
    OK(MPI_Type_commit(&t));
    unsigned char buf[32];
    int pos = 0;
    OK(MPI_Pack(MPI_BOTTOM, 1, t, buf, sizeof buf, &pos, MPI_COMM_SELF));
    CHECK(pos == 12);
    a = 0, b = 0;
    pos = 0;
    OK(MPI_Unpack(buf, sizeof buf, &pos, MPI_BOTTOM, 1, t, MPI_COMM_SELF));
    CHECK(a == 11 && b == 2.5);
    OK(MPI_Type_free(&t));
    /* A null buffer with relative displacements is still an error. */
    MPI_Datatype c;
    OK(MPI_Type_contiguous(2, MPI_INT, &c));
    OK(MPI_Type_commit(&c));
    MPI_Datatype r;
    OK(MPI_Type_create_resized(c, 0, 16, &r));
    OK(MPI_Type_commit(&r));
    pos = 0;
    FAILS(MPI_ERR_BUFFER, MPI_Pack(NULL, 2, r, buf, sizeof buf, &pos, MPI_COMM_SELF));
    OK(MPI_Type_free(&c));
    OK(MPI_Type_free(&r));
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    darrays();
    external32();
    matching_and_f90();
    large_counts();
    bottom();
    report_ok("types_layouts");
    OK(MPI_Finalize());
    return 0;
}
