/* The info functions before MPI_Init and after MPI_Finalize (MPI-4; errors
 * there are fatal, so only successes are checked outside): objects
 * made before MPI_Init keep their handles and contents through it, and
 * stay usable after MPI_Finalize. */
#include <string.h>
#include "check.h"

/* Before MPI_Init and after MPI_Finalize a failed check cannot abort the
 * job through MPI: it exits with status 1. */
#define PLAIN(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                    \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static int has(MPI_Info info, const char *key, const char *want) {
    char v[MPI_MAX_INFO_VAL];
    int len = MPI_MAX_INFO_VAL, flag = 0;
    if (MPI_Info_get_string(info, key, &len, v, &flag) != MPI_SUCCESS) return 0;
    return flag && strcmp(v, want) == 0;
}

int main(int argc, char **argv) {
    MPI_Info a, b, env1, gone;
    int n = -1, flag = 0;
    PLAIN(MPI_Info_create(&a) == MPI_SUCCESS);
    PLAIN(MPI_Info_set(a, "color", "blue") == MPI_SUCCESS);
    PLAIN(MPI_Info_dup(a, &b) == MPI_SUCCESS);
    PLAIN(MPI_Info_set(b, "shape", "round") == MPI_SUCCESS);
    PLAIN(MPI_Info_create(&gone) == MPI_SUCCESS);
    PLAIN(MPI_Info_free(&gone) == MPI_SUCCESS && gone == MPI_INFO_NULL);
    PLAIN(MPI_Info_get_nkeys(b, &n) == MPI_SUCCESS && n == 2);
    PLAIN(MPI_Info_create_env(argc, argv, &env1) == MPI_SUCCESS);
    PLAIN(MPI_Info_get_valuelen(env1, "host", &n, &flag) == MPI_SUCCESS && flag && n > 0);

    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* The objects made before are still there, unchanged. */
    CHECK(has(a, "color", "blue") && has(b, "shape", "round"));
    OK(MPI_Info_get_nkeys(a, &n));
    CHECK(n == 1);
    /* MPI_INFO_ENV knows the job's size, and knew it before MPI_Init
     * (MPI_Info_create_env gives the same before and after). */
    char want[32];
    snprintf(want, sizeof want, "%d", size);
    CHECK(has(MPI_INFO_ENV, "maxprocs", want));
    CHECK(has(env1, "maxprocs", want));
    FAILS(MPI_ERR_INFO_NOKEY, MPI_Info_delete(a, "nothing"));
    FAILS(MPI_ERR_INFO, MPI_Info_get_nkeys(gone, &n));
    OK(MPI_Info_set(a, "during", "init"));
    MPI_Info c;
    OK(MPI_Info_create(&c));
    OK(MPI_Info_set(c, "made", "inside"));
    OK(MPI_Barrier(MPI_COMM_WORLD));
    MPI_Finalize();

    /* After MPI_Finalize: everything made before still works. */
    PLAIN(has(a, "color", "blue") && has(a, "during", "init"));
    PLAIN(has(c, "made", "inside"));
    PLAIN(MPI_Info_free(&a) == MPI_SUCCESS && MPI_Info_free(&b) == MPI_SUCCESS);
    PLAIN(MPI_Info_free(&c) == MPI_SUCCESS && MPI_Info_free(&env1) == MPI_SUCCESS);
    PLAIN(MPI_Info_create(&a) == MPI_SUCCESS);
    PLAIN(MPI_Info_set(a, "k", "v") == MPI_SUCCESS && has(a, "k", "v"));
    PLAIN(MPI_Info_free(&a) == MPI_SUCCESS);
    if (rank == 0) {
        printf("OK info_outside %d ranks\n", size);
        fflush(stdout);
    }
    return 0;
}
