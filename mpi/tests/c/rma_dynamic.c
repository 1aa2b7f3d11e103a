/* Dynamic windows: memory attached after creation, addressed by absolute
 * addresses; put, get, accumulate, fetch-and-op, compare-and-swap, locks;
 * an address not attached is MPI_ERR_RMA_RANGE; detach. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Win win;
    OK(MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    OK(MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN));
    int *flavor, flag;
    OK(MPI_Win_get_attr(win, MPI_WIN_CREATE_FLAVOR, &flavor, &flag));
    CHECK(flag && *flavor == MPI_WIN_FLAVOR_DYNAMIC);
    long *mem = calloc(8, sizeof(long));
    OK(MPI_Win_attach(win, mem, 8 * sizeof(long)));
    FAILS(MPI_ERR_RMA_ATTACH, MPI_Win_attach(win, mem + 2, sizeof(long)));
    MPI_Aint mine, *addr = malloc(size * sizeof(MPI_Aint));
    OK(MPI_Get_address(mem, &mine));
    MPI_Allgather(&mine, 1, MPI_AINT, addr, 1, MPI_AINT, MPI_COMM_WORLD);
    int right = (rank + 1) % size, left = (rank + size - 1) % size;

    OK(MPI_Win_fence(0, win));
    long v[2] = {10 * rank + 1, 10 * rank + 2};
    OK(MPI_Put(v, 2, MPI_LONG, right, addr[right], 2, MPI_LONG, win));
    OK(MPI_Win_fence(0, win));
    CHECK(mem[0] == 10 * left + 1 && mem[1] == 10 * left + 2);
    long got[2];
    OK(MPI_Get(got, 2, MPI_LONG, left, addr[left], 2, MPI_LONG, win));
    OK(MPI_Win_fence(0, win));
    int ll = (left + size - 1) % size;
    CHECK(got[0] == 10 * ll + 1 && got[1] == 10 * ll + 2);

    /* Everyone adds into rank 0's element 4, and takes tickets from element 5. */
    OK(MPI_Win_lock_all(0, win));
    long one = 1, ticket = -1, add = rank + 1;
    OK(MPI_Accumulate(&add, 1, MPI_LONG, 0, addr[0] + 4 * sizeof(long), 1, MPI_LONG, MPI_SUM, win));
    OK(MPI_Fetch_and_op(&one, &ticket, MPI_LONG, 0, addr[0] + 5 * sizeof(long), MPI_SUM, win));
    CHECK(ticket >= 0 && ticket < size);
    long cmp = 0, neu = rank + 100, old = -1;
    OK(MPI_Compare_and_swap(&neu, &cmp, &old, MPI_LONG, 0, addr[0] + 6 * sizeof(long), win));
    OK(MPI_Win_flush_all(win));
    /* Outside what is attached. */
    FAILS(MPI_ERR_RMA_RANGE, MPI_Put(v, 1, MPI_LONG, 0, addr[0] + 8 * sizeof(long), 1, MPI_LONG, win));
    FAILS(MPI_ERR_RMA_RANGE, MPI_Get(got, 2, MPI_LONG, 0, addr[0] + 7 * sizeof(long), 2, MPI_LONG, win));
    OK(MPI_Win_unlock_all(win));
    int won = old == 0, winners;
    MPI_Allreduce(&won, &winners, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    CHECK(winners == 1);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        CHECK(mem[4] == (long)size * (size + 1) / 2);
        CHECK(mem[5] == size);
        CHECK(mem[6] >= 100 && mem[6] < 100 + size);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    OK(MPI_Win_detach(win, mem));
    FAILS(MPI_ERR_RMA_ATTACH, MPI_Win_detach(win, mem));
    OK(MPI_Win_free(&win));
    free(mem);
    free(addr);
    report_ok("rma_dynamic");
    MPI_Finalize();
    return 0;
}
