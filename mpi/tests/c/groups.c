/* Groups: Comm_group, size/rank, incl/excl/range forms, set operations,
 * compare, translate_ranks, free; Comm_create, Comm_create_group,
 * Comm_idup; bad ranks and handles under MPI_ERRORS_RETURN. */
#include "check.h"

int main(int argc, char **argv) {
    int rank, size, n, r, res;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

    MPI_Group world, rev, evens, odds, u, x, e;
    OK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    OK(MPI_Group_size(world, &n));
    OK(MPI_Group_rank(world, &r));
    CHECK(n == size && r == rank);

    /* Reversed: incl with every rank backwards. */
    int ranks[64];
    for (int i = 0; i < size; i++) ranks[i] = size - 1 - i;
    OK(MPI_Group_incl(world, size, ranks, &rev));
    OK(MPI_Group_rank(rev, &r));
    CHECK(r == size - 1 - rank);
    OK(MPI_Group_compare(world, rev, &res));
    CHECK(res == (size == 1 ? MPI_IDENT : MPI_SIMILAR));
    OK(MPI_Group_compare(world, world, &res));
    CHECK(res == MPI_IDENT);

    /* Even ranks by a range, odd ones by excluding that range. */
    int range[1][3] = {{0, size - 1, 2}};
    OK(MPI_Group_range_incl(world, 1, range, &evens));
    OK(MPI_Group_range_excl(world, 1, range, &odds));
    OK(MPI_Group_size(evens, &n));
    CHECK(n == (size + 1) / 2);
    OK(MPI_Group_size(odds, &n));
    CHECK(n == size / 2);
    OK(MPI_Group_rank(evens, &r));
    CHECK(r == (rank % 2 == 0 ? rank / 2 : MPI_UNDEFINED));
    /* A descending range. */
    MPI_Group down;
    int drange[1][3] = {{size - 1, 0, -1}};
    OK(MPI_Group_range_incl(world, 1, drange, &down));
    OK(MPI_Group_compare(down, rev, &res));
    CHECK(res == MPI_IDENT);
    OK(MPI_Group_free(&down));

    /* Set operations. */
    OK(MPI_Group_union(evens, odds, &u));
    OK(MPI_Group_compare(u, world, &res));
    CHECK(res == (size <= 2 ? MPI_IDENT : MPI_SIMILAR));
    OK(MPI_Group_intersection(evens, odds, &x));
    CHECK(x == MPI_GROUP_EMPTY);
    OK(MPI_Group_difference(world, odds, &e));
    OK(MPI_Group_compare(e, evens, &res));
    CHECK(res == MPI_IDENT);
    OK(MPI_Group_size(MPI_GROUP_EMPTY, &n));
    CHECK(n == 0);
    OK(MPI_Group_rank(MPI_GROUP_EMPTY, &r));
    CHECK(r == MPI_UNDEFINED);

    /* translate_ranks: world -> rev, and into the evens. */
    int in[3] = {0, size - 1, MPI_PROC_NULL}, outr[3];
    OK(MPI_Group_translate_ranks(world, 3, in, rev, outr));
    CHECK(outr[0] == size - 1 && outr[1] == 0 && outr[2] == MPI_PROC_NULL);
    OK(MPI_Group_translate_ranks(world, 2, in, evens, outr));
    CHECK(outr[0] == 0);
    CHECK(outr[1] == ((size - 1) % 2 == 0 ? (size - 1) / 2 : MPI_UNDEFINED));

    /* Comm_create over the evens: members get a communicator in group order. */
    MPI_Comm ce;
    OK(MPI_Comm_create(MPI_COMM_WORLD, evens, &ce));
    if (rank % 2 == 0) {
        CHECK(ce != MPI_COMM_NULL);
        OK(MPI_Comm_rank(ce, &r));
        OK(MPI_Comm_size(ce, &n));
        CHECK(r == rank / 2 && n == (size + 1) / 2);
        int v = rank, sum = -1;
        OK(MPI_Allreduce(&v, &sum, 1, MPI_INT, MPI_SUM, ce));
        int want = 0;
        for (int i = 0; i < size; i += 2) want += i;
        CHECK(sum == want);
        OK(MPI_Comm_free(&ce));
    } else {
        CHECK(ce == MPI_COMM_NULL);
    }
    /* Comm_create over the reversed group: ranks reversed. */
    MPI_Comm cr;
    OK(MPI_Comm_create(MPI_COMM_WORLD, rev, &cr));
    OK(MPI_Comm_rank(cr, &r));
    CHECK(r == size - 1 - rank);
    OK(MPI_Comm_compare(MPI_COMM_WORLD, cr, &res));
    CHECK(res == (size == 1 ? MPI_CONGRUENT : MPI_SIMILAR));
    OK(MPI_Comm_free(&cr));

    /* Comm_create_group: only the odd ranks call it. */
    if (rank % 2 == 1) {
        MPI_Comm co;
        OK(MPI_Comm_create_group(MPI_COMM_WORLD, odds, 5, &co));
        OK(MPI_Comm_rank(co, &r));
        CHECK(r == rank / 2);
        int v = 1, sum = 0;
        OK(MPI_Allreduce(&v, &sum, 1, MPI_INT, MPI_SUM, co));
        CHECK(sum == size / 2);
        OK(MPI_Comm_free(&co));
    }

    /* Comm_idup. */
    MPI_Comm d;
    MPI_Request q;
    OK(MPI_Comm_idup(MPI_COMM_WORLD, &d, &q));
    OK(MPI_Wait(&q, MPI_STATUS_IGNORE));
    CHECK(q == MPI_REQUEST_NULL);
    OK(MPI_Comm_compare(MPI_COMM_WORLD, d, &res));
    CHECK(res == MPI_CONGRUENT);
    OK(MPI_Comm_free(&d));

    /* Bad arguments. */
    MPI_Group bad;
    int too_big = size;
    FAILS(MPI_ERR_RANK, MPI_Group_incl(world, 1, &too_big, &bad));
    int neg = -1;
    FAILS(MPI_ERR_RANK, MPI_Group_excl(world, 1, &neg, &bad));
    int twice[2] = {0, 0};
    FAILS(MPI_ERR_RANK, MPI_Group_incl(world, 2, twice, &bad));
    int brange[1][3] = {{0, size, 1}};
    FAILS(MPI_ERR_RANK, MPI_Group_range_incl(world, 1, brange, &bad));
    FAILS(MPI_ERR_RANK, MPI_Group_translate_ranks(world, 1, &too_big, rev, outr));
    FAILS(MPI_ERR_GROUP, MPI_Group_size(MPI_GROUP_NULL, &n));
    FAILS(MPI_ERR_COMM, MPI_Comm_group(MPI_COMM_NULL, &bad));
    FAILS(MPI_ERR_ARG, MPI_Group_size(world, NULL));

    /* Free: the handle becomes MPI_GROUP_NULL; a freed group is invalid. */
    MPI_Group keep = rev;
    OK(MPI_Group_free(&rev));
    CHECK(rev == MPI_GROUP_NULL);
    FAILS(MPI_ERR_GROUP, MPI_Group_size(keep, &n));
    FAILS(MPI_ERR_GROUP, MPI_Group_free(&keep));
    OK(MPI_Group_free(&evens));
    OK(MPI_Group_free(&odds));
    OK(MPI_Group_free(&u));
    OK(MPI_Group_free(&x));
    OK(MPI_Group_free(&e));
    OK(MPI_Group_free(&world));

    /* MPI_Comm_create with a different (disjoint) group on each side:
     * the even ranks and the odd ranks (MPI-2.2). */
    {
        MPI_Group wg, pg;
        int par[4], np = 0;
        for (int i = rank % 2; i < size && np < 4; i += 2) par[np++] = i;
        OK(MPI_Comm_group(MPI_COMM_WORLD, &wg));
        OK(MPI_Group_incl(wg, np, par, &pg));
        MPI_Comm pc;
        OK(MPI_Comm_create(MPI_COMM_WORLD, pg, &pc));
        int ps, pr;
        OK(MPI_Comm_size(pc, &ps));
        OK(MPI_Comm_rank(pc, &pr));
        CHECK(ps == np && pr == rank / 2);
        OK(MPI_Comm_free(&pc));
        OK(MPI_Group_free(&pg));
        OK(MPI_Group_free(&wg));
    }
    report_ok("groups");
    OK(MPI_Finalize());
    return 0;
}
