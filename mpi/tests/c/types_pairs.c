/* The pair types and the predefined types' names.
 *
 * MPI_DOUBLE_INT & co. are the C structs {value; int}: their size is the
 * two members' (12 for MPI_DOUBLE_INT), their extent the struct's (16).
 * Checked: sizes and extents against the C compiler, a ring of pair arrays
 * (the padding is not data: the receiver's padding stays untouched),
 * Get_count/Get_elements (each pair is two basic elements), a struct of
 * {double, int, double, int} received as two MPI_DOUBLE_INT, MINLOC/MAXLOC
 * on MPI_DOUBLE_INT and on a contiguous type of them, and the name of
 * MPI_C_COMPLEX (the header's synonym of MPI_C_FLOAT_COMPLEX). */
#include <string.h>
#include "check.h"

typedef struct { double v; int i; } di_t;
typedef struct { long v; int i; } li_t;
typedef struct { short v; int i; } si_t;
typedef struct { long double v; int i; } ldi_t;
typedef struct { float v; int i; } fi_t;

static int rank, size;

static void size_and_extent(MPI_Datatype t, int data, MPI_Aint ext) {
    int sz = -1;
    MPI_Aint lb = -1, e = -1, tlb = -1, te = -1;
    MPI_Count szx = -1;
    OK(MPI_Type_size(t, &sz));
    OK(MPI_Type_size_x(t, &szx));
    OK(MPI_Type_get_extent(t, &lb, &e));
    OK(MPI_Type_get_true_extent(t, &tlb, &te));
    CHECK(sz == data && szx == data);
    CHECK(lb == 0 && e == ext);
    CHECK(tlb == 0 && te <= ext && te >= data);
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;

    size_and_extent(MPI_DOUBLE_INT, sizeof(double) + sizeof(int), sizeof(di_t));
    size_and_extent(MPI_LONG_INT, sizeof(long) + sizeof(int), sizeof(li_t));
    size_and_extent(MPI_SHORT_INT, sizeof(short) + sizeof(int), sizeof(si_t));
    size_and_extent(MPI_LONG_DOUBLE_INT, sizeof(long double) + sizeof(int), sizeof(ldi_t));
    size_and_extent(MPI_FLOAT_INT, sizeof(float) + sizeof(int), sizeof(fi_t));
    size_and_extent(MPI_2INT, 2 * sizeof(int), 2 * sizeof(int));

    /* A ring of 5 pairs; the receiver's padding keeps its 0x5a bytes. */
    di_t s[5], r[5];
    memset(s, 0, sizeof s);
    memset(r, 0x5a, sizeof r);
    for (int k = 0; k < 5; k++) s[k].v = rank * 10.0 + k, s[k].i = 100 * rank + k;
    MPI_Status st;
    OK(MPI_Sendrecv(s, 5, MPI_DOUBLE_INT, next, 1, r, 5, MPI_DOUBLE_INT, prev, 1, MPI_COMM_WORLD, &st));
    int n = -1;
    OK(MPI_Get_count(&st, MPI_DOUBLE_INT, &n));
    CHECK(n == 5);
    OK(MPI_Get_elements(&st, MPI_DOUBLE_INT, &n));
    CHECK(n == 10);
    for (int k = 0; k < 5; k++) {
        CHECK(r[k].v == prev * 10.0 + k && r[k].i == 100 * prev + k);
        const unsigned char *pad = (const unsigned char *)&r[k] + 12;
        for (int b = 0; b < 4; b++) CHECK(pad[b] == 0x5a);
    }
    /* The same as bytes: 5 pairs are 60 bytes on the wire. */
    unsigned char raw[80];
    OK(MPI_Sendrecv(s, 5, MPI_DOUBLE_INT, next, 2, raw, 80, MPI_BYTE, prev, 2, MPI_COMM_WORLD, &st));
    OK(MPI_Get_count(&st, MPI_BYTE, &n));
    CHECK(n == 60);
    /* Short pairs too: {short; pad; int}. */
    si_t ss[3], sr[3];
    memset(sr, 0, sizeof sr);
    for (int k = 0; k < 3; k++) ss[k].v = (short)(rank + k), ss[k].i = -rank - k;
    OK(MPI_Sendrecv(ss, 3, MPI_SHORT_INT, next, 3, sr, 3, MPI_SHORT_INT, prev, 3, MPI_COMM_WORLD, &st));
    OK(MPI_Get_count(&st, MPI_SHORT_INT, &n));
    CHECK(n == 3);
    for (int k = 0; k < 3; k++) CHECK(sr[k].v == prev + k && sr[k].i == -prev - k);

    /* {double, int, double, int} received as 2 MPI_DOUBLE_INT: 4 elements. */
    struct { double a; int b; double c; int d; } foo = {1.5, 2, 3.5, 4};
    di_t bar[2];
    int blks[4] = {1, 1, 1, 1};
    MPI_Aint disps[4] = {0, (char *)&foo.b - (char *)&foo, (char *)&foo.c - (char *)&foo,
                         (char *)&foo.d - (char *)&foo};
    MPI_Datatype types[4] = {MPI_DOUBLE, MPI_INT, MPI_DOUBLE, MPI_INT}, st4;
    OK(MPI_Type_create_struct(4, blks, disps, types, &st4));
    OK(MPI_Type_commit(&st4));
    OK(MPI_Sendrecv(&foo, 1, st4, 0, 4, bar, 2, MPI_DOUBLE_INT, 0, 4, MPI_COMM_SELF, &st));
    OK(MPI_Get_elements(&st, MPI_DOUBLE_INT, &n));
    CHECK(n == 4);
    CHECK(bar[0].v == 1.5 && bar[0].i == 2 && bar[1].v == 3.5 && bar[1].i == 4);
    OK(MPI_Type_free(&st4));

    /* MINLOC/MAXLOC on pairs and on a contiguous type of pairs. */
    di_t me[2] = {{(double)(rank % 3), rank}, {(double)-(rank % 3), rank}}, lo[2], hi[2];
    OK(MPI_Allreduce(me, lo, 2, MPI_DOUBLE_INT, MPI_MINLOC, MPI_COMM_WORLD));
    CHECK(lo[0].v == 0 && lo[0].i == 0);
    MPI_Datatype two;
    OK(MPI_Type_contiguous(2, MPI_DOUBLE_INT, &two));
    OK(MPI_Type_commit(&two));
    OK(MPI_Allreduce(me, hi, 1, two, MPI_MAXLOC, MPI_COMM_WORLD));
    int top = size > 2 ? 2 : size - 1;
    CHECK(hi[0].v == top && hi[0].i == top);
    CHECK(hi[1].v == 0 && hi[1].i == 0);
    OK(MPI_Type_free(&two));
    li_t lme = {rank, rank}, lmax;
    OK(MPI_Allreduce(&lme, &lmax, 1, MPI_LONG_INT, MPI_MAXLOC, MPI_COMM_WORLD));
    CHECK(lmax.v == size - 1 && lmax.i == size - 1);

    /* Pack of pairs: 12 bytes each. */
    int psz = -1;
    OK(MPI_Pack_size(5, MPI_DOUBLE_INT, MPI_COMM_WORLD, &psz));
    CHECK(psz == 60);
    unsigned char pk[64];
    int pos = 0;
    OK(MPI_Pack(s, 5, MPI_DOUBLE_INT, pk, sizeof pk, &pos, MPI_COMM_WORLD));
    CHECK(pos == 60);
    double d0;
    int i0;
    memcpy(&d0, pk + 12, sizeof d0);
    memcpy(&i0, pk + 20, sizeof i0);
    CHECK(d0 == s[1].v && i0 == s[1].i);

    /* Names: MPI_C_COMPLEX is the header's synonym of MPI_C_FLOAT_COMPLEX. */
    char name[MPI_MAX_OBJECT_NAME];
    int len = 0;
    OK(MPI_Type_get_name(MPI_C_COMPLEX, name, &len));
    CHECK(strcmp(name, "MPI_C_COMPLEX") == 0 && len == 13);
    OK(MPI_Type_get_name(MPI_DOUBLE_INT, name, &len));
    CHECK(strcmp(name, "MPI_DOUBLE_INT") == 0);

    report_ok("types_pairs");
    OK(MPI_Finalize());
    return 0;
}
