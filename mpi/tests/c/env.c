/* The environment: init, thread level, names, versions, clocks, attributes. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int flag = -1, provided = -1;
    OK(MPI_Initialized(&flag));
    CHECK(flag == 0);
    OK(MPI_Finalized(&flag));
    CHECK(flag == 0);
    OK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided));
    CHECK(provided == MPI_THREAD_FUNNELED); /* what dos supports */
    OK(MPI_Initialized(&flag));
    CHECK(flag == 1);
    OK(MPI_Query_thread(&provided));
    CHECK(provided == MPI_THREAD_FUNNELED);
    OK(MPI_Is_thread_main(&flag));
    CHECK(flag == 1);

    char name[MPI_MAX_PROCESSOR_NAME];
    int len = -1;
    OK(MPI_Get_processor_name(name, &len));
    CHECK(len > 0 && len < MPI_MAX_PROCESSOR_NAME && (int)strlen(name) == len);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    OK(MPI_Get_library_version(version, &len));
    CHECK(strncmp(version, "dos-mpi", 7) == 0 && (int)strlen(version) == len);
    int v = 0, sv = -1;
    OK(MPI_Get_version(&v, &sv));
    CHECK(v == MPI_VERSION && sv == MPI_SUBVERSION);

    double t0 = MPI_Wtime();
    double t1 = MPI_Wtime();
    CHECK(t1 >= t0 && t0 >= 0.0);
    CHECK(MPI_Wtick() > 0.0 && MPI_Wtick() < 1e-3);
    CHECK(PMPI_Wtime() >= t1);

    int *ub = NULL;
    OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag));
    CHECK(flag == 1 && ub != NULL && *ub >= 32767);
    int *usize = NULL, n = 0;
    OK(MPI_Comm_size(MPI_COMM_WORLD, &n));
    OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &usize, &flag));
    CHECK(flag == 1 && *usize == n);
    /* A key that is neither predefined nor the program's is MPI_ERR_KEYVAL. */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_get_attr(MPI_COMM_WORLD, 12345, &usize, &flag));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));

    /* MPI_COMM_SELF is a communicator of one. */
    int r = -1;
    OK(MPI_Comm_size(MPI_COMM_SELF, &n));
    OK(MPI_Comm_rank(MPI_COMM_SELF, &r));
    CHECK(n == 1 && r == 0);

    /* Small helpers: datatype names, addresses, balanced dimensions. */
    char tname[128];
    OK(MPI_Type_get_name(MPI_DOUBLE, tname, &len));
    CHECK(strcmp(tname, "MPI_DOUBLE") == 0 && len == 10);
    MPI_Datatype dt = MPI_INT;
    OK(MPI_Type_commit(&dt));
    MPI_Aint addr = 0;
    OK(MPI_Get_address(&len, &addr));
    CHECK(addr == (MPI_Aint)&len);
    int dims[3] = {0, 0, 0};
    OK(MPI_Dims_create(12, 3, dims));
    CHECK(dims[0] == 3 && dims[1] == 2 && dims[2] == 2);
    MPI_Aint lb = -1, ext = 0;
    OK(MPI_Type_get_extent(MPI_DOUBLE_INT, &lb, &ext));
    CHECK(lb == 0 && ext == 16);

    /* The status layout of the standard ABI. */
    CHECK(sizeof(MPI_Status) == 8 * sizeof(int));
    CHECK(sizeof(MPI_Count) == 8 && sizeof(MPI_Offset) == 8 && sizeof(MPI_Aint) == 8);
    CHECK(sizeof(MPI_Comm) == sizeof(void *));

    report_ok("env");
    OK(MPI_Finalize());
    OK(MPI_Finalized(&flag));
    CHECK(flag == 1);
    return 0;
}
