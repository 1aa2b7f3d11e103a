/* MPI_Alloc_mem / MPI_Free_mem, and the program's own window attributes
 * (MPI_Win_set_attr / get_attr / delete_attr, delete callbacks at
 * MPI_Win_free) beside the predefined ones. MPICH's test utility library
 * needs all three (found by its test suite: nothing linked without them). */
#include <string.h>
#include "check.h"

static int deletes;
static MPI_Win deleted_on;

static int win_delete(MPI_Win w, int key, void *val, void *extra) {
    (void)key;
    CHECK(extra == (void *)&deletes);
    CHECK(val == (void *)&deleted_on || val == (void *)&deletes);
    deletes++;
    deleted_on = w;
    return MPI_SUCCESS;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    /* Alloc_mem: usable memory, also for a window; size 0 is fine. */
    int *buf = NULL;
    OK(MPI_Alloc_mem(64 * sizeof(int), MPI_INFO_NULL, &buf));
    CHECK(buf != NULL);
    for (int i = 0; i < 64; i++) buf[i] = -1;
    void *none = NULL;
    OK(MPI_Alloc_mem(0, MPI_INFO_NULL, &none));
    OK(MPI_Free_mem(none));
    FAILS(MPI_ERR_SIZE, MPI_Alloc_mem(-1, MPI_INFO_NULL, &none));
    FAILS(MPI_ERR_ARG, MPI_Alloc_mem(8, MPI_INFO_NULL, NULL));

    MPI_Win win;
    OK(MPI_Win_create(buf, 64 * sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &win));
    MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
    OK(MPI_Win_fence(0, win));
    int v = rank;
    OK(MPI_Put(&v, 1, MPI_INT, (rank + 1) % size, rank, 1, MPI_INT, win));
    OK(MPI_Win_fence(0, win));
    CHECK(buf[(rank + size - 1) % size] == (rank + size - 1) % size);

    /* The program's attributes. */
    int key, flag = 1;
    void *got = NULL;
    OK(MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, win_delete, &key, &deletes));
    OK(MPI_Win_get_attr(win, key, &got, &flag));
    CHECK(flag == 0);
    OK(MPI_Win_set_attr(win, key, &deletes));
    OK(MPI_Win_get_attr(win, key, &got, &flag));
    CHECK(flag == 1 && got == (void *)&deletes);
    /* Replacing runs the delete callback on the old value. */
    OK(MPI_Win_set_attr(win, key, &deleted_on));
    CHECK(deletes == 1 && deleted_on == win);
    OK(MPI_Win_get_attr(win, key, &got, &flag));
    CHECK(flag == 1 && got == (void *)&deleted_on);
    OK(MPI_Win_delete_attr(win, key));
    CHECK(deletes == 2);
    OK(MPI_Win_get_attr(win, key, &got, &flag));
    CHECK(flag == 0);
    FAILS(MPI_ERR_KEYVAL, MPI_Win_delete_attr(win, key));
    /* The predefined ones are still there. */
    void *base = NULL;
    OK(MPI_Win_get_attr(win, MPI_WIN_BASE, &base, &flag));
    CHECK(flag == 1 && base == buf);
    /* A keyval of another kind is refused. */
    int ckey;
    OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &ckey, NULL));
    FAILS(MPI_ERR_KEYVAL, MPI_Win_set_attr(win, ckey, NULL));
    OK(MPI_Comm_free_keyval(&ckey));
    /* Freeing the window deletes what is left. */
    OK(MPI_Win_set_attr(win, key, &deletes));
    MPI_Win old = win;
    OK(MPI_Win_free(&win));
    CHECK(deletes == 3 && deleted_on == old);
    OK(MPI_Win_free_keyval(&key));
    FAILS(MPI_ERR_WIN, MPI_Win_set_attr(old, key, NULL));

    OK(MPI_Free_mem(buf));
    report_ok("alloc_winattr");
    MPI_Finalize();
    return 0;
}
