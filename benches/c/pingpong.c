/*
 * pingpong.c: the C anchor of ci/bench-compare.sh. A small OSU-style
 * ping-pong latency and windowed bandwidth loop over plain MPI calls, built
 * twice from this one source: with Open MPI's mpicc and with dos's dosmpicc
 * (mpi/bin/dosmpicc, libmpi of the dos-mpi crate). Both builds then run the
 * same C code, so the comparison is C path against C path, with no Rust
 * binding layer (rsmpi) on the MPI side to flatter dos.
 *
 *   pingpong --impl dos|mpi [--min-size N] [--max-size N] [--iters N] [--warmup N]
 *            [--only latency|bw]
 *
 * Needs exactly 2 ranks. Prints one JSON line per benchmark on rank 0, in the
 * format of `dosbench --json`, so `dosbench compare` reads it:
 *
 *   latency  rank 0 sends, rank 1 sends back; one-way time = round trip / 2 (us)
 *   bw       rank 0 posts a window of 64 MPI_Isend, rank 1 64 MPI_Irecv into
 *            one buffer; rank 1 answers each window with a 4-byte message;
 *            MB/s = size * 64 * iterations / time (1 MB = 10^6 bytes)
 *
 * Sizes: 0 (latency only, when --min-size is 0, the default), then the powers
 * of two from --min-size up to --max-size (default 1M); sizes accept K and M.
 * ci/bench-compare.sh runs one size per job, alternating dos and Open MPI.
 * Iterations: --iters (default 10000 for latency, 1000 for bw) up to 8 KiB,
 * a tenth of that above (as dosbench and OSU do); warm-up likewise.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 64
#define LARGE 8192

struct opts {
    const char *impl;
    long min_size;
    long max_size;
    long iters;   /* < 0: the default of each benchmark */
    long warmup;  /* < 0: the default */
    int latency, bw;
};

static long parse_size(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 0)
        return -1;
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    return *end ? -1 : v;
}

static int parse(int argc, char **argv, struct opts *o)
{
    o->impl = "mpi";
    o->min_size = 0;
    o->max_size = 1 << 20;
    o->iters = -1;
    o->warmup = -1;
    o->latency = o->bw = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return -1;
        if (!strcmp(a, "--impl")) {
            if (strcmp(v, "dos") && strcmp(v, "mpi"))
                return -1;
            o->impl = v;
        } else if (!strcmp(a, "--min-size")) {
            if ((o->min_size = parse_size(v)) < 0)
                return -1;
        } else if (!strcmp(a, "--max-size")) {
            if ((o->max_size = parse_size(v)) < 0)
                return -1;
        } else if (!strcmp(a, "--iters")) {
            if ((o->iters = parse_size(v)) < 1)
                return -1;
        } else if (!strcmp(a, "--warmup")) {
            if ((o->warmup = parse_size(v)) < 0)
                return -1;
        } else if (!strcmp(a, "--only")) {
            o->latency = !strcmp(v, "latency");
            o->bw = !strcmp(v, "bw");
            if (!o->latency && !o->bw)
                return -1;
        } else {
            return -1;
        }
        i++;
    }
    return o->min_size <= o->max_size && o->max_size <= (1L << 30) ? 0 : -1;
}

/* The first size of the schedule: 0 for latency when --min-size is 0, else
 * the smallest power of two >= --min-size (and >= 1). */
static long first_size(long min, int zero_ok)
{
    if (min == 0 && zero_ok)
        return 0;
    long s = 1;
    while (s < min)
        s *= 2;
    return s;
}

static long count(long given, long dflt, long size)
{
    long n = given >= 0 ? given : dflt;
    if (size > LARGE)
        n = n / 10 > 0 ? n / 10 : (n > 0 ? 1 : 0);
    return n;
}

/* One row of the JSON output: avg/min/max are rank 0's value (pairwise
 * benchmarks report the sender's, as dosbench does). */
static void row(int first, long size, double v, long iters)
{
    printf("%s{\"size\":%ld,\"avg\":%.6f,\"min\":%.6f,\"max\":%.6f,\"iters\":%ld}",
           first ? "" : ",", size, v, v, v, iters);
}

static void latency(const struct opts *o, int rank, char *buf)
{
    if (rank == 0)
        printf("{\"benchmark\":\"latency\",\"impl\":\"%s\",\"ranks\":2,\"unit\":\"us\",\"rows\":[",
               o->impl);
    int first = 1;
    for (long size = first_size(o->min_size, 1); size <= o->max_size; size = size ? size * 2 : 1) {
        long iters = count(o->iters, 10000, size);
        long warm = count(o->warmup, 1000, size);
        double t0 = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        for (long i = 0; i < iters + warm; i++) {
            if (i == warm)
                t0 = MPI_Wtime();
            if (rank == 0) {
                MPI_Send(buf, (int)size, MPI_CHAR, 1, 1, MPI_COMM_WORLD);
                MPI_Recv(buf, (int)size, MPI_CHAR, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(buf, (int)size, MPI_CHAR, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, (int)size, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
            }
        }
        double us = (MPI_Wtime() - t0) * 1e6 / (2.0 * (double)iters);
        if (rank == 0)
            row(first, size, us, iters);
        first = 0;
    }
    if (rank == 0)
        printf("]}\n");
}

static void bandwidth(const struct opts *o, int rank, char *buf)
{
    MPI_Request reqs[WINDOW];
    int ack = 0;
    if (rank == 0)
        printf("{\"benchmark\":\"bw\",\"impl\":\"%s\",\"ranks\":2,\"unit\":\"MB/s\",\"rows\":[",
               o->impl);
    int first = 1;
    for (long size = first_size(o->min_size, 0); size <= o->max_size; size *= 2) {
        long iters = count(o->iters, 1000, size);
        long warm = count(o->warmup, 100, size);
        double t0 = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        for (long i = 0; i < iters + warm; i++) {
            if (i == warm)
                t0 = MPI_Wtime();
            if (rank == 0) {
                for (int w = 0; w < WINDOW; w++)
                    MPI_Isend(buf, (int)size, MPI_CHAR, 1, 2, MPI_COMM_WORLD, &reqs[w]);
                MPI_Waitall(WINDOW, reqs, MPI_STATUSES_IGNORE);
                MPI_Recv(&ack, 1, MPI_INT, 1, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                for (int w = 0; w < WINDOW; w++)
                    MPI_Irecv(buf, (int)size, MPI_CHAR, 0, 2, MPI_COMM_WORLD, &reqs[w]);
                MPI_Waitall(WINDOW, reqs, MPI_STATUSES_IGNORE);
                MPI_Send(&ack, 1, MPI_INT, 0, 3, MPI_COMM_WORLD);
            }
        }
        double secs = MPI_Wtime() - t0;
        double mbps = (double)size * WINDOW * (double)iters / secs / 1e6;
        if (rank == 0)
            row(first, size, mbps, iters);
        first = 0;
    }
    if (rank == 0)
        printf("]}\n");
}

int main(int argc, char **argv)
{
    int rank, size;
    struct opts o;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (parse(argc, argv, &o) != 0) {
        if (rank == 0)
            fprintf(stderr, "usage: pingpong --impl dos|mpi [--min-size N] [--max-size N] "
                            "[--iters N] [--warmup N] [--only latency|bw]\n");
        MPI_Finalize();
        return 2;
    }
    if (size != 2) {
        if (rank == 0)
            fprintf(stderr, "pingpong: needs exactly 2 ranks, not %d\n", size);
        MPI_Finalize();
        return 2;
    }
    char *buf = malloc(o.max_size > 0 ? (size_t)o.max_size : 1);
    if (!buf) {
        fprintf(stderr, "pingpong: cannot allocate %ld bytes\n", o.max_size);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(buf, 'a', o.max_size > 0 ? (size_t)o.max_size : 1);
    if (o.latency)
        latency(&o, rank, buf);
    if (o.bw)
        bandwidth(&o, rank, buf);
    fflush(stdout);
    free(buf);
    MPI_Finalize();
    return 0;
}
