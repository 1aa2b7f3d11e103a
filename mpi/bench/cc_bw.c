/* Instructions per message of osu_bw's pattern through the C layer, for
 * callgrind (deterministic: the machine's load does not enter). One rank
 * sends to itself: 200 windows of 64 MPI_Irecv, 64 MPI_Isend of 8 bytes,
 * MPI_Waitall of the sends, MPI_Waitall of the receives. Run with
 * mpi/bench/callgrind.sh (BENCHMARKS.md, "Session 11: the C layer's
 * latency"); dos's own nonblocking calls show in the same profile. */
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    enum { W = 64, N = 200 };
    char s[W][8], r[W][8];
    MPI_Request sr[W], rr[W];
    for (int j = 0; j < W; j++) s[j][0] = (char)j;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < W; j++) MPI_Irecv(r[j], 8, MPI_CHAR, 0, 100, MPI_COMM_WORLD, &rr[j]);
        for (int j = 0; j < W; j++) MPI_Isend(s[j], 8, MPI_CHAR, 0, 100, MPI_COMM_WORLD, &sr[j]);
        MPI_Waitall(W, sr, MPI_STATUSES_IGNORE);
        MPI_Waitall(W, rr, MPI_STATUSES_IGNORE);
    }
    for (int j = 0; j < W; j++)
        if (r[j][0] != (char)j) { printf("wrong result\n"); return 1; }
    MPI_Finalize();
    return 0;
}
