/* Collectives on an intercommunicator, against the values each process
 * can compute alone: MPI_ROOT / MPI_PROC_NULL / remote-root semantics for
 * the rooted ones, "the other group's data" for the others, and the
 * nonblocking forms. Groups as in inter_comm.c: world ranks [0, half) and
 * [half, n), half = n / 2. Each collective runs twice, rooted once in
 * each group. */
#include <string.h>
#include "check.h"

static int wr, wn, half, color, lr, ln, rn;

static int remote_world(int j) { return color == 0 ? half + j : j; }
static int local_world(int j) { return color == 0 ? j : half + j; }

/* Root argument for a collective rooted at local rank `root` of group `g`. */
static int root_arg(int g, int root) {
    if (color == g) return lr == root ? MPI_ROOT : MPI_PROC_NULL;
    return root;
}

static void rooted(MPI_Comm ic, int g, int root) {
    int r = root_arg(g, root);
    int is_root = r == MPI_ROOT, leaf = color != g;
    int other = leaf ? remote_world(root) : -1; /* root's world rank */
    int buf[4], i, j;

    /* Bcast. */
    for (i = 0; i < 4; i++) buf[i] = is_root ? 100 * wr + i : -1;
    OK(MPI_Bcast(buf, 4, MPI_INT, r, ic));
    for (i = 0; i < 4; i++) CHECK(buf[i] == (leaf ? 100 * other + i : is_root ? 100 * wr + i : -1));

    /* Reduce: the sum of the other group's world ranks + i. */
    int s[3], got[3] = {-1, -1, -1};
    for (i = 0; i < 3; i++) s[i] = wr + i;
    OK(MPI_Reduce(s, got, 3, MPI_INT, MPI_SUM, r, ic));
    if (is_root) {
        int sum = 0;
        for (j = 0; j < rn; j++) sum += remote_world(j);
        for (i = 0; i < 3; i++) CHECK(got[i] == sum + rn * i);
    } else {
        for (i = 0; i < 3; i++) CHECK(got[i] == -1);
    }

    /* Gather and Gatherv: 2 ints per process; v: j + 1 ints at 3 * j. */
    int two[2] = {wr, -wr};
    int *all = malloc(sizeof(int) * 3 * (rn + 1));
    for (i = 0; i < 3 * (rn + 1); i++) all[i] = -7;
    OK(MPI_Gather(two, 2, MPI_INT, all, 2, MPI_INT, r, ic));
    if (is_root)
        for (j = 0; j < rn; j++) CHECK(all[2 * j] == remote_world(j) && all[2 * j + 1] == -remote_world(j));
    int *cnt = malloc(sizeof(int) * (rn + 1)), *dsp = malloc(sizeof(int) * (rn + 1));
    for (j = 0; j < rn; j++) {
        cnt[j] = j % 3 + 1;
        dsp[j] = 3 * j;
    }
    int mine[3] = {wr, wr + 1, wr + 2};
    for (i = 0; i < 3 * (rn + 1); i++) all[i] = -7;
    OK(MPI_Gatherv(mine, lr % 3 + 1, MPI_INT, all, cnt, dsp, MPI_INT, r, ic));
    if (is_root)
        for (j = 0; j < rn; j++)
            for (i = 0; i < 3; i++) CHECK(all[3 * j + i] == (i < cnt[j] ? remote_world(j) + i : -7));

    /* Scatter and Scatterv: the reverse. */
    for (j = 0; j < 3 * (rn + 1); j++) all[j] = is_root ? 1000 * wr + j : -1;
    int in2[3] = {-5, -5, -5};
    OK(MPI_Scatter(all, 2, MPI_INT, in2, 2, MPI_INT, r, ic));
    if (leaf) CHECK(in2[0] == 1000 * other + 2 * lr && in2[1] == 1000 * other + 2 * lr + 1);
    else CHECK(in2[0] == -5);
    in2[0] = in2[1] = in2[2] = -5;
    OK(MPI_Scatterv(all, cnt, dsp, MPI_INT, in2, lr % 3 + 1, MPI_INT, r, ic));
    if (leaf)
        for (i = 0; i < 3; i++) CHECK(in2[i] == (i <= lr % 3 ? 1000 * other + 3 * lr + i : -5));
    free(all);
    free(cnt);
    free(dsp);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &wn);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (wn < 2) {
        report_ok("inter_coll");
        MPI_Finalize();
        return 0;
    }
    half = wn / 2;
    color = wr < half ? 0 : 1;
    MPI_Comm local, ic;
    OK(MPI_Comm_split(MPI_COMM_WORLD, color, wr, &local));
    MPI_Comm_rank(local, &lr);
    MPI_Comm_size(local, &ln);
    rn = wn - ln;
    OK(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, color == 0 ? half : 0, 9, &ic));
    int i, j, k;

    OK(MPI_Barrier(ic));
    rooted(ic, 0, 0);
    rooted(ic, 1, wn - half - 1);
    rooted(ic, 0, half - 1);

    /* Allreduce: the other group's sum. */
    int rsum = 0, lsum = 0, v[2] = {wr, 2 * wr}, got[2];
    for (j = 0; j < rn; j++) rsum += remote_world(j);
    for (j = 0; j < ln; j++) lsum += local_world(j);
    OK(MPI_Allreduce(v, got, 2, MPI_INT, MPI_SUM, ic));
    CHECK(got[0] == rsum && got[1] == 2 * rsum);
    FAILS(MPI_ERR_ARG, MPI_Allreduce(MPI_IN_PLACE, got, 2, MPI_INT, MPI_SUM, ic));

    /* Allgather(v): block j from remote j. */
    int *all = malloc(sizeof(int) * 4 * (rn + ln));
    int *cnt = malloc(sizeof(int) * (rn + ln)), *dsp = malloc(sizeof(int) * (rn + ln));
    int two[2] = {wr, wr * wr};
    OK(MPI_Allgather(two, 2, MPI_INT, all, 2, MPI_INT, ic));
    for (j = 0; j < rn; j++) CHECK(all[2 * j] == remote_world(j) && all[2 * j + 1] == remote_world(j) * remote_world(j));
    for (j = 0; j < rn; j++) {
        cnt[j] = (remote_world(j) % 2) + 1;
        dsp[j] = 2 * (rn - 1 - j);
    }
    for (i = 0; i < 2 * rn; i++) all[i] = -1;
    OK(MPI_Allgatherv(two, wr % 2 + 1, MPI_INT, all, cnt, dsp, MPI_INT, ic));
    for (j = 0; j < rn; j++) {
        CHECK(all[dsp[j]] == remote_world(j));
        if (cnt[j] == 2) CHECK(all[dsp[j] + 1] == remote_world(j) * remote_world(j));
        else CHECK(all[dsp[j] + 1] == -1);
    }

    /* Alltoall(v,w): block j to remote j is 100 * wr + j. */
    int *out = malloc(sizeof(int) * 2 * (rn + ln));
    for (j = 0; j < rn; j++) out[j] = 100 * wr + j;
    OK(MPI_Alltoall(out, 1, MPI_INT, all, 1, MPI_INT, ic));
    for (j = 0; j < rn; j++) CHECK(all[j] == 100 * remote_world(j) + lr);
    int *sc = malloc(sizeof(int) * rn), *sd = malloc(sizeof(int) * rn);
    for (j = 0; j < rn; j++) {
        sc[j] = 1;
        sd[j] = rn - 1 - j;
        out[rn - 1 - j] = 100 * wr + j;
        cnt[j] = 1;
        dsp[j] = 2 * j;
        all[2 * j] = all[2 * j + 1] = -1;
    }
    OK(MPI_Alltoallv(out, sc, sd, MPI_INT, all, cnt, dsp, MPI_INT, ic));
    for (j = 0; j < rn; j++) CHECK(all[2 * j] == 100 * remote_world(j) + lr && all[2 * j + 1] == -1);
    MPI_Datatype *ty = malloc(sizeof(MPI_Datatype) * rn);
    for (j = 0; j < rn; j++) {
        ty[j] = MPI_INT;
        sd[j] *= sizeof(int);
        dsp[j] *= sizeof(int);
        all[2 * j] = -1;
    }
    OK(MPI_Alltoallw(out, sc, sd, ty, all, cnt, dsp, ty, ic));
    for (j = 0; j < rn; j++) CHECK(all[2 * j] == 100 * remote_world(j) + lr);

    /* Reduce_scatter(_block): each group's vectors have ln * rn elements
     * (the same on both sides); element e of the other group's sum is
     * rsum + rn * e, and local rank lr gets elements [lr * rn, lr * rn + rn). */
    int total = ln * rn;
    int *vec = malloc(sizeof(int) * total), *res = malloc(sizeof(int) * rn);
    for (k = 0; k < total; k++) vec[k] = wr + k;
    for (j = 0; j < ln; j++) cnt[j] = rn;
    OK(MPI_Reduce_scatter(vec, res, cnt, MPI_INT, MPI_SUM, ic));
    for (k = 0; k < rn; k++) CHECK(res[k] == rsum + rn * (lr * rn + k));
    for (k = 0; k < rn; k++) res[k] = -1;
    OK(MPI_Reduce_scatter_block(vec, res, rn, MPI_INT, MPI_SUM, ic));
    for (k = 0; k < rn; k++) CHECK(res[k] == rsum + rn * (lr * rn + k));

    /* Nonblocking forms. */
    MPI_Request rq;
    int b[2] = {-1, -1};
    if (color == 0 && lr == 0) b[0] = 4242;
    OK(MPI_Ibcast(b, 1, MPI_INT, color == 0 ? (lr == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0, ic, &rq));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    CHECK(color == 0 ? (lr == 0 ? b[0] == 4242 : b[0] == -1) : b[0] == 4242);
    OK(MPI_Iallreduce(v, got, 2, MPI_INT, MPI_SUM, ic, &rq));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    CHECK(got[0] == rsum && got[1] == 2 * rsum);
    OK(MPI_Ibarrier(ic, &rq));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    OK(MPI_Iallgather(two, 2, MPI_INT, all, 2, MPI_INT, ic, &rq));
    OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
    for (j = 0; j < rn; j++) CHECK(all[2 * j] == remote_world(j));

    /* The same on a dup, and the merged communicator still works. */
    MPI_Comm d, m;
    OK(MPI_Comm_dup(ic, &d));
    OK(MPI_Allreduce(v, got, 2, MPI_INT, MPI_MAX, d));
    CHECK(got[0] == (color == 0 ? wn - 1 : half - 1));
    OK(MPI_Intercomm_merge(d, color, &m));
    OK(MPI_Allreduce(v, got, 1, MPI_INT, MPI_SUM, m));
    CHECK(got[0] == rsum + lsum);
    OK(MPI_Comm_free(&m));
    OK(MPI_Comm_free(&d));

    /* A root outside the remote group. */
    FAILS(MPI_ERR_ROOT, MPI_Reduce(v, got, 1, MPI_INT, MPI_SUM, rn, ic));
    FAILS(MPI_ERR_ROOT, MPI_Gather(v, 1, MPI_INT, got, 1, MPI_INT, -7, ic));

    free(all);
    free(cnt);
    free(dsp);
    free(out);
    free(sc);
    free(sd);
    free(ty);
    free(vec);
    free(res);
    OK(MPI_Comm_free(&ic));
    OK(MPI_Comm_free(&local));
    report_ok("inter_coll");
    MPI_Finalize();
    return 0;
}
