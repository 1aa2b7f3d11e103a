/* dos is MPI_THREAD_FUNNELED and keeps its state for the thread that called
 * MPI_Init: another thread that calls MPI is refused with an error, never
 * reaches that state. Here a second thread calls MPI_Comm_size (and the
 * functions any thread may call, which work): the error handler (fatal)
 * ends the job with the reason. */
#include <pthread.h>
#include "check.h"

static void *other(void *arg) {
    (void)arg;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag) return NULL;
    double t = MPI_Wtime();
    if (t < 0) return NULL;
    printf("other thread: MPI_Initialized and MPI_Wtime work\n");
    fflush(stdout);
    int n = -1;
    MPI_Comm_size(MPI_COMM_WORLD, &n); /* refused: the job ends here */
    printf("not reached: size %d\n", n);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other, NULL) == 0);
    pthread_join(t, NULL);
    printf("not reached: the main thread went on\n");
    MPI_Finalize();
    return 0;
}
