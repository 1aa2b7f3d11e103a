/* Communicators: dup, split, split_type, compare, free; error handlers
 * are per communicator and inherited by dup and split. */
#include "check.h"

int main(int argc, char **argv) {
    int rank, size, r, n, res;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));

    MPI_Comm dup;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    OK(MPI_Comm_rank(dup, &r));
    OK(MPI_Comm_size(dup, &n));
    CHECK(r == rank && n == size);
    OK(MPI_Comm_compare(MPI_COMM_WORLD, MPI_COMM_WORLD, &res));
    CHECK(res == MPI_IDENT);
    OK(MPI_Comm_compare(MPI_COMM_WORLD, dup, &res));
    CHECK(res == MPI_CONGRUENT);
    /* Messages on the duplicate do not meet receives on the original. */
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, a = -1, b = -1;
    MPI_Request q[2];
    OK(MPI_Irecv(&a, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, &q[0]));
    OK(MPI_Irecv(&b, 1, MPI_INT, prev, 0, dup, &q[1]));
    int one = 1, two = 2;
    OK(MPI_Send(&two, 1, MPI_INT, next, 0, dup));
    OK(MPI_Send(&one, 1, MPI_INT, next, 0, MPI_COMM_WORLD));
    OK(MPI_Waitall(2, q, MPI_STATUSES_IGNORE));
    CHECK(a == 1 && b == 2);

    /* Split: reversed order within halves; MPI_UNDEFINED gives MPI_COMM_NULL. */
    MPI_Comm half, none;
    OK(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, size - rank, &half));
    OK(MPI_Comm_rank(half, &r));
    OK(MPI_Comm_size(half, &n));
    CHECK(n == (size + 1 - rank % 2) / 2);
    CHECK(r == n - 1 - rank / 2);
    OK(MPI_Comm_compare(MPI_COMM_WORLD, half, &res));
    CHECK(res == (size == 1 ? MPI_CONGRUENT : MPI_UNEQUAL));
    OK(MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, 0, &none));
    CHECK((rank == 0) == (none != MPI_COMM_NULL));
    if (none != MPI_COMM_NULL) OK(MPI_Comm_free(&none));

    /* Same members in reverse order: similar. */
    MPI_Comm rev;
    OK(MPI_Comm_split(MPI_COMM_WORLD, 0, size - rank, &rev));
    OK(MPI_Comm_compare(MPI_COMM_WORLD, rev, &res));
    CHECK(res == (size == 1 ? MPI_CONGRUENT : MPI_SIMILAR));

    /* Every rank here runs on this host: one shared-memory communicator. */
    MPI_Comm node;
    OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    OK(MPI_Comm_size(node, &n));
    OK(MPI_Comm_rank(node, &r));
    CHECK(n == size && r == rank);
    MPI_Comm undef;
    OK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_UNDEFINED, 0, MPI_INFO_NULL, &undef));
    CHECK(undef == MPI_COMM_NULL);

    /* Error handlers: set, get, inherited by dup; the world's is untouched. */
    MPI_Errhandler eh;
    OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL);
    OK(MPI_Comm_set_errhandler(half, MPI_ERRORS_RETURN));
    MPI_Comm half2;
    OK(MPI_Comm_dup(half, &half2));
    OK(MPI_Comm_get_errhandler(half2, &eh));
    CHECK(eh == MPI_ERRORS_RETURN);
    CHECK(MPI_Send(&one, 1, MPI_INT, 1000, 0, half2) == MPI_ERR_RANK);
    OK(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh));
    CHECK(eh == MPI_ERRORS_ARE_FATAL);
    OK(MPI_Errhandler_free(&eh));
    CHECK(eh == MPI_ERRHANDLER_NULL);
    OK(MPI_Comm_call_errhandler(half2, MPI_ERR_OTHER));

    /* Collectives on the new communicators. */
    int s = 0;
    OK(MPI_Allreduce(&one, &s, 1, MPI_INT, MPI_SUM, node));
    CHECK(s == size);
    OK(MPI_Barrier(half2));

    /* Free: the handle becomes MPI_COMM_NULL; predefined ones cannot be freed. */
    OK(MPI_Comm_free(&dup));
    CHECK(dup == MPI_COMM_NULL);
    OK(MPI_Comm_free(&half));
    OK(MPI_Comm_free(&half2));
    OK(MPI_Comm_free(&rev));
    OK(MPI_Comm_free(&node));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_Comm w = MPI_COMM_WORLD;
    CHECK(MPI_Comm_free(&w) == MPI_ERR_COMM);
    int flag = 0;
    OK(MPI_Comm_test_inter(MPI_COMM_WORLD, &flag));
    CHECK(flag == 0);

    report_ok("comm");
    OK(MPI_Finalize());
    return 0;
}
