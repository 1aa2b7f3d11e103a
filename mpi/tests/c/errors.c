/* Bad arguments return the standard error classes under MPI_ERRORS_RETURN,
 * on every rank, and leave the library usable. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int rank, size;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    OK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    int buf[4] = {0}, flag, out = 0;
    MPI_Status st;
    MPI_Request req;
    MPI_Comm c;

    /* Ranks. */
    FAILS(MPI_ERR_RANK, MPI_Send(buf, 1, MPI_INT, size, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_RANK, MPI_Send(buf, 1, MPI_INT, -5, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_RANK, MPI_Recv(buf, 1, MPI_INT, size + 3, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_RANK, MPI_Isend(buf, 1, MPI_INT, size, 0, MPI_COMM_WORLD, &req));
    FAILS(MPI_ERR_RANK, MPI_Irecv(buf, 1, MPI_INT, -7, 0, MPI_COMM_WORLD, &req));
    FAILS(MPI_ERR_RANK, MPI_Probe(size, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_RANK, MPI_Iprobe(size, 0, MPI_COMM_WORLD, &flag, &st));
    FAILS(MPI_ERR_RANK, MPI_Ssend(buf, 1, MPI_INT, size, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_RANK, MPI_Sendrecv(buf, 1, MPI_INT, size, 0, buf, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, &st));
    /* Counts. */
    FAILS(MPI_ERR_COUNT, MPI_Send(buf, -1, MPI_INT, 0, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Recv(buf, -1, MPI_INT, 0, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_COUNT, MPI_Bcast(buf, -3, MPI_INT, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_COUNT, MPI_Allreduce(buf, buf + 2, -1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    /* Datatypes. */
    FAILS(MPI_ERR_TYPE, MPI_Send(buf, 1, MPI_DATATYPE_NULL, 0, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE, MPI_Send(buf, 1, (MPI_Datatype)0x7777, 0, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE, MPI_Recv(buf, 1, MPI_DATATYPE_NULL, 0, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_TYPE, MPI_Bcast(buf, 1, MPI_DATATYPE_NULL, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TYPE, MPI_Type_size(MPI_DATATYPE_NULL, &out));
    /* Communicators (the error goes to MPI_COMM_WORLD's handler). */
    FAILS(MPI_ERR_COMM, MPI_Send(buf, 1, MPI_INT, 0, 0, MPI_COMM_NULL));
    FAILS(MPI_ERR_COMM, MPI_Comm_rank(MPI_COMM_NULL, &out));
    FAILS(MPI_ERR_COMM, MPI_Comm_size((MPI_Comm)0x12345, &out));
    FAILS(MPI_ERR_COMM, MPI_Barrier(MPI_COMM_NULL));
    FAILS(MPI_ERR_COMM, MPI_Comm_dup(MPI_COMM_NULL, &c));
    /* Roots. */
    FAILS(MPI_ERR_ROOT, MPI_Bcast(buf, 1, MPI_INT, size, MPI_COMM_WORLD));
    FAILS(MPI_ERR_ROOT, MPI_Bcast(buf, 1, MPI_INT, -1, MPI_COMM_WORLD));
    FAILS(MPI_ERR_ROOT, MPI_Reduce(buf, buf + 1, 1, MPI_INT, MPI_SUM, size, MPI_COMM_WORLD));
    FAILS(MPI_ERR_ROOT, MPI_Gather(buf, 1, MPI_INT, buf, 1, MPI_INT, size + 1, MPI_COMM_WORLD));
    FAILS(MPI_ERR_ROOT, MPI_Scatter(buf, 1, MPI_INT, buf, 1, MPI_INT, -2, MPI_COMM_WORLD));
    /* Tags. */
    FAILS(MPI_ERR_TAG, MPI_Send(buf, 1, MPI_INT, 0, -1, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TAG, MPI_Send(buf, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD));
    FAILS(MPI_ERR_TAG, MPI_Recv(buf, 1, MPI_INT, 0, -5, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_TAG, MPI_Isend(buf, 1, MPI_INT, 0, -9, MPI_COMM_WORLD, &req));
    /* Null buffers with a nonzero count. */
    FAILS(MPI_ERR_BUFFER, MPI_Send(NULL, 1, MPI_INT, 0, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_BUFFER, MPI_Recv(NULL, 2, MPI_INT, 0, 0, MPI_COMM_WORLD, &st));
    FAILS(MPI_ERR_BUFFER, MPI_Bcast(NULL, 2, MPI_INT, 0, MPI_COMM_WORLD));
    FAILS(MPI_ERR_BUFFER, MPI_Allreduce(NULL, buf, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    /* Operations. */
    double d = 1, e;
    FAILS(MPI_ERR_OP, MPI_Allreduce(&d, &e, 1, MPI_DOUBLE, MPI_BAND, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Allreduce(&d, &e, 1, MPI_DOUBLE, MPI_OP_NULL, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Allreduce(buf, buf + 1, 1, MPI_INT, MPI_MINLOC, MPI_COMM_WORLD));
    FAILS(MPI_ERR_OP, MPI_Reduce(buf, buf + 1, 1, MPI_INT, MPI_REPLACE, 0, MPI_COMM_WORLD));
    /* Requests and null output arguments. */
    MPI_Request bogus = (MPI_Request)0x55555;
    FAILS(MPI_ERR_REQUEST, MPI_Wait(&bogus, &st));
    FAILS(MPI_ERR_REQUEST, MPI_Test(&bogus, &flag, &st));
    MPI_Request nullreq = MPI_REQUEST_NULL;
    FAILS(MPI_ERR_REQUEST, MPI_Request_free(&nullreq));
    FAILS(MPI_ERR_ARG, MPI_Comm_rank(MPI_COMM_WORLD, NULL));
    FAILS(MPI_ERR_ARG, MPI_Comm_split(MPI_COMM_WORLD, -4, 0, &c));
    FAILS(MPI_ERR_ARG, MPI_Isend(buf, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, NULL));
    /* Spawning is not supported, cleanly. */
    FAILS(MPI_ERR_UNSUPPORTED_OPERATION,
          MPI_Comm_spawn("x", MPI_ARGV_NULL, 1, MPI_INFO_NULL, 0, MPI_COMM_SELF, &c, MPI_ERRCODES_IGNORE));

    /* Groups not implemented yet say so cleanly. */
    MPI_Session sess;
    FAILS(MPI_ERR_UNSUPPORTED_OPERATION, MPI_Session_init(MPI_INFO_NULL, MPI_ERRORS_RETURN, &sess));
    /* A topology function on a communicator without one. */
    FAILS(MPI_ERR_TOPOLOGY, MPI_Cart_coords(MPI_COMM_WORLD, 0, 0, NULL));
    MPI_Datatype pt = MPI_INT;
    FAILS(MPI_ERR_TYPE, MPI_Type_free(&pt));
    FAILS(MPI_ERR_DIMS, MPI_Dims_create(12, 2, (int[]){5, 0}));

    /* Error strings and classes. */
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, cls = -1;
    OK(MPI_Error_string(MPI_ERR_TRUNCATE, msg, &len));
    CHECK(strstr(msg, "MPI_ERR_TRUNCATE") != NULL && (int)strlen(msg) == len);
    OK(MPI_Error_string(MPI_SUCCESS, msg, &len));
    CHECK(len > 0);
    OK(MPI_Error_class(MPI_ERR_RANK, &cls));
    CHECK(cls == MPI_ERR_RANK);
    FAILS(MPI_ERR_ARG, MPI_Error_class(123456, &cls));

    /* Still usable: a ring exchange and a collective. */
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, t = -1;
    OK(MPI_Sendrecv(&rank, 1, MPI_INT, next, 0, &t, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, &st));
    CHECK(t == prev);
    int s = 0, one = 1;
    OK(MPI_Allreduce(&one, &s, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    CHECK(s == size);

    report_ok("errors");
    OK(MPI_Finalize());
    return 0;
}
