/* Intercommunicators: MPI_Intercomm_create/merge, the communicator
 * functions on them (test_inter, sizes, groups, dup, split, create,
 * compare, names, free), point-to-point addressed to the remote group, and
 * MPI_ERR_COMM where the standard allows only intracommunicators.
 *
 * MPI_COMM_WORLD is cut in two: group 0 is world ranks [0, half), group 1
 * is [half, n), half = n / 2 (so at 3 ranks the groups have 1 and 2). */
#include <string.h>
#include "check.h"

static int wr, wn, half, color, lr, ln, rn;

/* World rank of remote rank j. */
static int remote_world(int j) { return color == 0 ? half + j : j; }

static void p2p(MPI_Comm ic) {
    /* Every process sends its world rank to every remote process, tag =
     * sender's local rank; receives name the sender by its remote rank. */
    int *in = malloc(sizeof(int) * rn), *out = malloc(sizeof(int) * rn);
    MPI_Request *rq = malloc(sizeof(MPI_Request) * 2 * rn);
    MPI_Status *st = malloc(sizeof(MPI_Status) * 2 * rn);
    for (int j = 0; j < rn; j++) {
        out[j] = wr * 1000 + j;
        OK(MPI_Irecv(&in[j], 1, MPI_INT, j, j, ic, &rq[j]));
    }
    for (int j = 0; j < rn; j++) OK(MPI_Isend(&out[j], 1, MPI_INT, j, lr, ic, &rq[rn + j]));
    OK(MPI_Waitall(2 * rn, rq, st));
    for (int j = 0; j < rn; j++) {
        CHECK(in[j] == remote_world(j) * 1000 + lr);
        CHECK(st[j].MPI_SOURCE == j && st[j].MPI_TAG == j);
    }

    /* Any source: everyone sends to remote rank 0, which probes. */
    int v = wr;
    MPI_Request s;
    OK(MPI_Isend(&v, 1, MPI_INT, 0, 50, ic, &s));
    if (lr == 0) {
        int seen = 0;
        for (int k = 0; k < rn; k++) {
            MPI_Status ps;
            int cnt = -1, x = -1;
            OK(MPI_Probe(MPI_ANY_SOURCE, 50, ic, &ps));
            OK(MPI_Get_count(&ps, MPI_INT, &cnt));
            CHECK(cnt == 1 && ps.MPI_SOURCE >= 0 && ps.MPI_SOURCE < rn);
            OK(MPI_Recv(&x, 1, MPI_INT, ps.MPI_SOURCE, 50, ic, MPI_STATUS_IGNORE));
            CHECK(x == remote_world(ps.MPI_SOURCE));
            seen |= 1 << ps.MPI_SOURCE;
        }
        CHECK(seen == (1 << rn) - 1);
    }
    OK(MPI_Wait(&s, MPI_STATUS_IGNORE));

    /* Persistent requests between the leaders, started three times. */
    if (lr == 0) {
        int a = 0, b = -1;
        MPI_Request pr[2];
        OK(MPI_Recv_init(&b, 1, MPI_INT, 0, 60, ic, &pr[0]));
        OK(MPI_Send_init(&a, 1, MPI_INT, 0, 60, ic, &pr[1]));
        for (int it = 0; it < 3; it++) {
            a = wr * 10 + it;
            OK(MPI_Startall(2, pr));
            OK(MPI_Waitall(2, pr, MPI_STATUSES_IGNORE));
            CHECK(b == remote_world(0) * 10 + it);
        }
        OK(MPI_Request_free(&pr[0]));
        OK(MPI_Request_free(&pr[1]));
        /* Sendrecv with the other leader. */
        int got = -1;
        MPI_Status ss;
        OK(MPI_Sendrecv(&wr, 1, MPI_INT, 0, 61, &got, 1, MPI_INT, 0, 61, ic, &ss));
        CHECK(got == remote_world(0) && ss.MPI_SOURCE == 0);
    }
    /* MPI_PROC_NULL and a rank past the remote group. */
    OK(MPI_Send(&v, 1, MPI_INT, MPI_PROC_NULL, 0, ic));
    FAILS(MPI_ERR_RANK, MPI_Send(&v, 1, MPI_INT, rn, 0, ic));
    free(in);
    free(out);
    free(rq);
    free(st);
}

static void merged(MPI_Comm ic, int high, int first_is_0) {
    MPI_Comm m;
    int r, n, sum = 0, one = wr;
    OK(MPI_Intercomm_merge(ic, high, &m));
    int flag = 1;
    OK(MPI_Comm_test_inter(m, &flag));
    CHECK(!flag);
    OK(MPI_Comm_rank(m, &r));
    OK(MPI_Comm_size(m, &n));
    CHECK(n == wn);
    int expect = first_is_0 ? wr : (color == 1 ? lr : rn + lr);
    CHECK(r == expect);
    OK(MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, m));
    CHECK(sum == wn * (wn - 1) / 2);
    OK(MPI_Comm_free(&m));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &wn);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);

    int flag = -1, sz;
    MPI_Group g;
    MPI_Comm ic;
    OK(MPI_Comm_test_inter(MPI_COMM_WORLD, &flag));
    CHECK(flag == 0);
    FAILS(MPI_ERR_COMM, MPI_Comm_remote_size(MPI_COMM_WORLD, &sz));
    FAILS(MPI_ERR_COMM, MPI_Comm_remote_group(MPI_COMM_SELF, &g));
    FAILS(MPI_ERR_COMM, MPI_Intercomm_merge(MPI_COMM_WORLD, 0, &ic));
    FAILS(MPI_ERR_COMM, MPI_Comm_test_inter(MPI_COMM_NULL, &flag));
    FAILS(MPI_ERR_RANK, MPI_Intercomm_create(MPI_COMM_WORLD, wn, MPI_COMM_WORLD, 0, 1, &ic));
    FAILS(MPI_ERR_RANK, MPI_Intercomm_create(MPI_COMM_SELF, 0, MPI_COMM_WORLD, wn, 1, &ic));
    if (wn < 2) {
        report_ok("inter_comm");
        MPI_Finalize();
        return 0;
    }
    half = wn / 2;
    color = wr < half ? 0 : 1;
    MPI_Comm local;
    OK(MPI_Comm_split(MPI_COMM_WORLD, color, wr, &local));
    MPI_Comm_rank(local, &lr);
    MPI_Comm_size(local, &ln);
    rn = wn - ln;
    OK(MPI_Intercomm_create(local, 0, MPI_COMM_WORLD, color == 0 ? half : 0, 7, &ic));
    OK(MPI_Comm_test_inter(ic, &flag));
    CHECK(flag == 1);
    int r = -1, n = -1;
    OK(MPI_Comm_rank(ic, &r));
    OK(MPI_Comm_size(ic, &n));
    CHECK(r == lr && n == ln);
    OK(MPI_Comm_remote_size(ic, &sz));
    CHECK(sz == rn);

    /* The groups, as world ranks. */
    MPI_Group wg, rg, lg;
    OK(MPI_Comm_group(MPI_COMM_WORLD, &wg));
    OK(MPI_Comm_remote_group(ic, &rg));
    OK(MPI_Comm_group(ic, &lg));
    int gs, gr;
    OK(MPI_Group_size(rg, &gs));
    CHECK(gs == rn);
    OK(MPI_Group_rank(rg, &gr));
    CHECK(gr == MPI_UNDEFINED);
    OK(MPI_Group_size(lg, &gs));
    OK(MPI_Group_rank(lg, &gr));
    CHECK(gs == ln && gr == lr);
    for (int j = 0; j < rn; j++) {
        int w = -1;
        OK(MPI_Group_translate_ranks(rg, 1, &j, wg, &w));
        CHECK(w == remote_world(j));
    }
    for (int j = 0; j < ln; j++) {
        int w = -1;
        OK(MPI_Group_translate_ranks(lg, 1, &j, wg, &w));
        CHECK(w == (color == 0 ? j : half + j));
    }
    OK(MPI_Group_free(&rg));
    OK(MPI_Group_free(&lg));

    p2p(ic);

    /* Merge: the group passing high = 0 first; a tie puts group 0 (the
     * lower leader) first. */
    merged(ic, color, 1);
    merged(ic, !color, 0);
    merged(ic, 0, 1);

    /* Dup: congruent, a separate context. */
    MPI_Comm d;
    OK(MPI_Comm_dup(ic, &d));
    int cmp = -1;
    OK(MPI_Comm_compare(ic, d, &cmp));
    CHECK(cmp == MPI_CONGRUENT);
    OK(MPI_Comm_compare(ic, ic, &cmp));
    CHECK(cmp == MPI_IDENT);
    OK(MPI_Comm_compare(ic, local, &cmp));
    CHECK(cmp == MPI_UNEQUAL);
    OK(MPI_Comm_test_inter(d, &flag));
    CHECK(flag == 1);
    if (lr == 0) {
        int a = 1, b = 2, x = 0, y = 0;
        MPI_Request q[2];
        OK(MPI_Isend(&a, 1, MPI_INT, 0, 5, d, &q[0]));
        OK(MPI_Isend(&b, 1, MPI_INT, 0, 5, ic, &q[1]));
        OK(MPI_Recv(&y, 1, MPI_INT, 0, 5, ic, MPI_STATUS_IGNORE));
        OK(MPI_Recv(&x, 1, MPI_INT, 0, 5, d, MPI_STATUS_IGNORE));
        OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
        CHECK(x == 1 && y == 2);
    }
    p2p(d);
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    OK(MPI_Comm_set_name(d, "inter dup"));
    OK(MPI_Comm_get_name(d, name, &len));
    CHECK(strcmp(name, "inter dup") == 0);
    OK(MPI_Comm_free(&d));
    CHECK(d == MPI_COMM_NULL);

    /* Split by parity of the local rank, reversed order: the remote
     * group is the remote processes of the same parity. */
    MPI_Comm s;
    int par = lr % 2;
    OK(MPI_Comm_split(ic, par, -lr, &s));
    int lsame = (ln - par + 1) / 2, rsame = (rn - par + 1) / 2;
    if (rsame == 0) {
        CHECK(s == MPI_COMM_NULL);
    } else {
        CHECK(s != MPI_COMM_NULL);
        OK(MPI_Comm_size(s, &n));
        OK(MPI_Comm_rank(s, &r));
        OK(MPI_Comm_remote_size(s, &sz));
        CHECK(n == lsame && sz == rsame);
        /* Highest local rank of my parity is rank 0. */
        int top = par + 2 * (lsame - 1);
        CHECK(r == (top - lr) / 2);
        if (r == 0) {
            int rtop = par + 2 * (rsame - 1), got = -1;
            OK(MPI_Sendrecv(&wr, 1, MPI_INT, 0, 3, &got, 1, MPI_INT, 0, 3, s, MPI_STATUS_IGNORE));
            CHECK(got == remote_world(rtop));
        }
        OK(MPI_Comm_free(&s));
    }
    OK(MPI_Comm_split(ic, MPI_UNDEFINED, 0, &s));
    CHECK(s == MPI_COMM_NULL);

    /* Create from each group's rank 0 only. */
    MPI_Group lead, all;
    int zero = 0;
    OK(MPI_Comm_group(ic, &all));
    OK(MPI_Group_incl(all, 1, &zero, &lead));
    OK(MPI_Comm_create(ic, lead, &s));
    if (lr == 0) {
        CHECK(s != MPI_COMM_NULL);
        OK(MPI_Comm_remote_size(s, &sz));
        OK(MPI_Comm_size(s, &n));
        CHECK(sz == 1 && n == 1);
        int got = -1;
        OK(MPI_Sendrecv(&wr, 1, MPI_INT, 0, 4, &got, 1, MPI_INT, 0, 4, s, MPI_STATUS_IGNORE));
        CHECK(got == remote_world(0));
        OK(MPI_Comm_free(&s));
    } else {
        CHECK(s == MPI_COMM_NULL);
    }
    FAILS(MPI_ERR_GROUP, MPI_Comm_create(ic, wg, &s));
    OK(MPI_Group_free(&lead));
    OK(MPI_Group_free(&all));

    /* Intracommunicator-only functions. */
    int dims[1] = {ln}, periods[1] = {0}, buf = 0;
    MPI_Comm bad;
    MPI_Win w;
    MPI_Request rq;
    FAILS(MPI_ERR_COMM, MPI_Cart_create(ic, 1, dims, periods, 0, &bad));
    FAILS(MPI_ERR_COMM, MPI_Scan(&wr, &buf, 1, MPI_INT, MPI_SUM, ic));
    FAILS(MPI_ERR_COMM, MPI_Exscan(&wr, &buf, 1, MPI_INT, MPI_SUM, ic));
    FAILS(MPI_ERR_COMM, MPI_Iscan(&wr, &buf, 1, MPI_INT, MPI_SUM, ic, &rq));
    FAILS(MPI_ERR_COMM, MPI_Comm_split_type(ic, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &bad));
    FAILS(MPI_ERR_COMM, MPI_Win_create(&buf, sizeof buf, 1, MPI_INFO_NULL, ic, &w));
    FAILS(MPI_ERR_COMM, MPI_Intercomm_create(ic, 0, MPI_COMM_WORLD, 0, 1, &bad));
    FAILS(MPI_ERR_ROOT, MPI_Bcast(&buf, 1, MPI_INT, rn, ic));
    /* Spawn stays out of scope. */
    MPI_Comm child;
    int errs[1];
    FAILS(MPI_ERR_UNSUPPORTED_OPERATION, MPI_Comm_spawn("x", MPI_ARGV_NULL, 1, MPI_INFO_NULL, 0, MPI_COMM_SELF, &child, errs));

    OK(MPI_Comm_free(&ic));
    CHECK(ic == MPI_COMM_NULL);
    OK(MPI_Group_free(&wg));
    OK(MPI_Comm_free(&local));
    report_ok("inter_comm");
    MPI_Finalize();
    return 0;
}
