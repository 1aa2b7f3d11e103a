/* Helpers of dos-mpi's C test programs: a failed check prints where and
 * aborts the job, so dosrun reports it. */
#ifndef DOS_MPI_TEST_CHECK_H
#define DOS_MPI_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>
#include <mpi.h>

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            int r_ = -1;                                                         \
            MPI_Comm_rank(MPI_COMM_WORLD, &r_);                                  \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s\n", r_, __FILE__, \
                    __LINE__, #cond);                                            \
            fflush(stderr);                                                      \
            MPI_Abort(MPI_COMM_WORLD, 99);                                       \
        }                                                                        \
    } while (0)

/* A call that must succeed. */
#define OK(call) CHECK((call) == MPI_SUCCESS)

/* A call that must fail with error class `cls` (under MPI_ERRORS_RETURN). */
#define FAILS(cls, call)                                                         \
    do {                                                                         \
        int rc_ = (call);                                                        \
        int c_ = -1;                                                             \
        MPI_Error_class(rc_, &c_);                                               \
        if (c_ != (cls)) {                                                       \
            fprintf(stderr, "%s:%d: %s returned class %d, expected %d (%s)\n",   \
                    __FILE__, __LINE__, #call, c_, (cls), #cls);                 \
            fflush(stderr);                                                      \
            MPI_Abort(MPI_COMM_WORLD, 98);                                       \
        }                                                                        \
    } while (0)

/* Rank 0 prints the line the test harness looks for. */
static inline void report_ok(const char *name) {
    int r, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (r == 0) {
        printf("OK %s %d ranks\n", name, n);
        fflush(stdout);
    }
}
#endif
