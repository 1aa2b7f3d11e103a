/* MPI_Init talks to nobody but the launcher: making MPI_COMM_SELF sends no
 * message, so right after MPI_Init a rank has touched no ring of the node's
 * shared segment: its RssShmem is the segment's header (8 kB today), below
 * 16 kB whatever the number of ranks. A split over the world to make
 * MPI_COMM_SELF touched a ring per pair: 16 kB on 1 rank, 24 on 2, 40 on 4,
 * about 1 MB on 64.
 * MPI_COMM_SELF still works, and the contexts agree with the other ranks'
 * (a dup of the world after it carries traffic). */
#include <string.h>
#include "check.h"

/* This process's shared memory in its page tables, in kB; -1 if unknown. */
static long rss_shmem_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssShmem:", 9) == 0)
            kb = strtol(line + 9, NULL, 10);
    fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    long kb = rss_shmem_kb();
    int rank, size;
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    if (kb >= 0 && kb >= 16) {
        fprintf(stderr, "rank %d: RssShmem %ld kB after MPI_Init on %d ranks\n", rank, kb, size);
        CHECK(kb < 16);
    }

    int sr = -1, ss = -1;
    OK(MPI_Comm_rank(MPI_COMM_SELF, &sr));
    OK(MPI_Comm_size(MPI_COMM_SELF, &ss));
    CHECK(sr == 0 && ss == 1);
    int in = rank + 1, out = 0;
    OK(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_SUM, MPI_COMM_SELF));
    CHECK(out == rank + 1);
    MPI_Request rq;
    out = 0;
    OK(MPI_Irecv(&out, 1, MPI_INT, 0, 7, MPI_COMM_SELF, &rq));
    OK(MPI_Send(&in, 1, MPI_INT, 0, 7, MPI_COMM_SELF));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    CHECK(out == rank + 1);

    MPI_Comm dup, selfdup;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    OK(MPI_Comm_dup(MPI_COMM_SELF, &selfdup));
    OK(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_SUM, dup));
    CHECK(out == size * (size + 1) / 2);
    /* Traffic on the world and on the dup does not mix. */
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, a = -1, b = -1;
    OK(MPI_Sendrecv(&rank, 1, MPI_INT, next, 3, &a, 1, MPI_INT, prev, 3, dup, MPI_STATUS_IGNORE));
    OK(MPI_Sendrecv(&size, 1, MPI_INT, next, 3, &b, 1, MPI_INT, prev, 3, MPI_COMM_WORLD,
                    MPI_STATUS_IGNORE));
    CHECK(a == prev && b == size);
    OK(MPI_Comm_free(&selfdup));
    OK(MPI_Comm_free(&dup));
    report_ok("init_local");
    OK(MPI_Finalize());
    return 0;
}
