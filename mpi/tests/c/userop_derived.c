/* A user operation on a dense derived datatype (MPI_Type_contiguous(3,
 * MPI_DOUBLE), the way MPICH's uoplong/allred3 use it): the function gets
 * the program's handle and a count of whole triples, never a split triple,
 * at every size (large buffers are cut into blocks by dos's algorithms),
 * and a non-commutative one is combined in rank order. Before the fix the
 * function was called with the count in doubles (reading 3x past the
 * buffer: heap corruption) and, for large buffers, on blocks that split
 * triples. */
#include <stdlib.h>
#include "check.h"

static MPI_Datatype triple;
static int bad_calls;

/* (sum, max, "last wins": rank order) per triple. */
static void op(void *in, void *inout, int *count, MPI_Datatype *dt) {
    const double *a = in;
    double *b = inout;
    if (*dt != triple) bad_calls++;
    for (int i = 0; i < *count; i++) {
        b[0] += a[0];
        b[1] = a[1] > b[1] ? a[1] : b[1];
        /* non-commutative: a ∘ b keeps b's third (the higher rank's) */
        a += 3;
        b += 3;
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Type_contiguous(3, MPI_DOUBLE, &triple);
    MPI_Type_commit(&triple);
    MPI_Op uop;
    OK(MPI_Op_create(op, 0, &uop));
    int counts[] = {1, 7, 1000, 131072};
    for (int c = 0; c < 4; c++) {
        int n = counts[c];
        double *in = malloc(3 * n * sizeof(double)), *out = malloc(3 * n * sizeof(double));
        for (int i = 0; i < n; i++) {
            in[3 * i] = 1 + (i % 4);
            in[3 * i + 1] = rank + i % 5;
            in[3 * i + 2] = rank;
        }
        for (int i = 0; i < 3 * n; i++) out[i] = -1;
        OK(MPI_Reduce(in, out, n, triple, uop, 0, MPI_COMM_WORLD));
        if (rank == 0)
            for (int i = 0; i < n; i++) {
                CHECK(out[3 * i] == size * (1 + (i % 4)));
                CHECK(out[3 * i + 1] == size - 1 + i % 5);
                CHECK(out[3 * i + 2] == size - 1);
            }
        for (int i = 0; i < 3 * n; i++) out[i] = -1;
        OK(MPI_Allreduce(in, out, n, triple, uop, MPI_COMM_WORLD));
        for (int i = 0; i < n; i++) {
            CHECK(out[3 * i] == size * (1 + (i % 4)));
            CHECK(out[3 * i + 1] == size - 1 + i % 5);
        }
        free(in);
        free(out);
    }
    CHECK(bad_calls == 0);
    MPI_Op_free(&uop);
    MPI_Type_free(&triple);
    report_ok("userop_derived");
    MPI_Finalize();
    return 0;
}
