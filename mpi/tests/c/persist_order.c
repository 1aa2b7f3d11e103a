/* Persistent collectives match by the order of their *_init calls, not of
 * their MPI_Start calls (MPI-4): rank 0 starts a bcast then a barrier,
 * the others the barrier then the bcast. Before the fix the two were
 * matched in start order on the communicator ("ranks disagree on counts").
 * An attribute copy callback must not run for the context they use. */
#include "check.h"

static int copies;

static int count_copy(MPI_Comm c, int k, void *e, void *in, void *out, int *flag) {
    (void)c, (void)k, (void)e, (void)in, (void)out;
    copies++;
    *flag = 0;
    return MPI_SUCCESS;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int key;
    OK(MPI_Comm_create_keyval(count_copy, MPI_COMM_NULL_DELETE_FN, &key, NULL));
    OK(MPI_Comm_set_attr(MPI_COMM_WORLD, key, &copies));
    for (int round = 0; round < 3; round++) {
        int a = -1, sum = 0, one = 1;
        MPI_Request req[3];
        OK(MPI_Bcast_init(&a, 1, MPI_INT, 0, MPI_COMM_WORLD, MPI_INFO_NULL, &req[0]));
        OK(MPI_Barrier_init(MPI_COMM_WORLD, MPI_INFO_NULL, &req[1]));
        OK(MPI_Allreduce_init(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, &req[2]));
        for (int again = 0; again < 2; again++) {
            a = rank == 0 ? 42 + again : -1;
            sum = 0;
            if (rank == 0) {
                OK(MPI_Start(&req[0]));
                OK(MPI_Start(&req[1]));
                OK(MPI_Start(&req[2]));
            } else {
                OK(MPI_Start(&req[2]));
                OK(MPI_Start(&req[1]));
                OK(MPI_Start(&req[0]));
            }
            OK(MPI_Waitall(3, req, MPI_STATUSES_IGNORE));
            CHECK(a == 42 + again);
            CHECK(sum == size);
        }
        for (int i = 0; i < 3; i++) OK(MPI_Request_free(&req[i]));
    }
    CHECK(copies == 0);
    OK(MPI_Comm_delete_attr(MPI_COMM_WORLD, key));
    OK(MPI_Comm_free_keyval(&key));
    report_ok("persist_order");
    MPI_Finalize();
    return 0;
}
