/* MPI_Dims_create: dimensions as close to each other as possible, in
 * non-increasing order, with fixed dimensions kept. Among equal spreads
 * (largest minus smallest) "close" weighs the middle factors too, as
 * MPICH's topo/dims5 expects: 5616 in 4-D is 13 x 9 x 8 x 6, not
 * 13 x 12 x 6 x 6. Bad input is MPI_ERR_DIMS, not a crash. */
#include "check.h"

static void expect(int n, int nd, const int *fixed, const int *want) {
    int d[8];
    for (int i = 0; i < nd; i++) d[i] = fixed ? fixed[i] : 0;
    OK(MPI_Dims_create(n, nd, d));
    for (int i = 0; i < nd; i++) {
        if (d[i] != want[i]) {
            fprintf(stderr, "Dims_create(%d, %d): dimension %d is %d, expected %d\n", n, nd, i,
                    d[i], want[i]);
            CHECK(d[i] == want[i]);
        }
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    expect(72, 2, NULL, (int[]){9, 8});
    expect(5040, 3, NULL, (int[]){21, 16, 15});
    expect(5616, 4, NULL, (int[]){13, 9, 8, 6});
    expect(590520, 4, NULL, (int[]){38, 37, 21, 20});
    expect(21600, 3, NULL, (int[]){30, 30, 24});
    expect(712656, 5, NULL, (int[]){101, 14, 9, 8, 7});
    expect(1000, 3, NULL, (int[]){10, 10, 10});
    expect(7, 2, NULL, (int[]){7, 1});
    expect(24, 3, (int[]){0, 3, 0}, (int[]){4, 3, 2});
    int bad[3] = {5, 0, 0};
    FAILS(MPI_ERR_DIMS, MPI_Dims_create(12, 3, bad));
    int huge[4] = {1 << 30, 1 << 30, 1 << 30, 0};
    FAILS(MPI_ERR_DIMS, MPI_Dims_create(8, 4, huge));
    report_ok("dims_balanced");
    MPI_Finalize();
    return 0;
}
