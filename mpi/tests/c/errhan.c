/* User error handlers: called with the communicator and the code of an
 * error raised under them (and by MPI_Comm_call_errhandler); added error
 * classes, codes and strings. */
#include <string.h>
#include "check.h"

static int calls, last_code;
static MPI_Comm last_comm;

static void handler(MPI_Comm *comm, int *code, ...) {
    calls++;
    last_code = *code;
    last_comm = *comm;
}

int main(int argc, char **argv) {
    int rank, size;
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    MPI_Errhandler eh, got;
    OK(MPI_Comm_create_errhandler(handler, &eh));
    MPI_Comm c;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
    OK(MPI_Comm_set_errhandler(c, eh));
    OK(MPI_Comm_get_errhandler(c, &got));
    CHECK(got == eh);

    /* An error under it: the handler gets the communicator and the code,
     * and the function returns the code. */
    int buf = 0;
    int rc = MPI_Send(&buf, 1, MPI_INT, size, 0, c);
    CHECK(calls == 1 && last_code == rc && last_comm == c);
    int cls;
    OK(MPI_Error_class(rc, &cls));
    CHECK(cls == MPI_ERR_RANK);
    rc = MPI_Bcast(&buf, 1, MPI_INT, -4, c);
    CHECK(calls == 2 && rc == MPI_ERR_ROOT && last_code == MPI_ERR_ROOT);

    /* A communicator duplicated from it inherits the handler. */
    MPI_Comm d;
    OK(MPI_Comm_dup(c, &d));
    rc = MPI_Send(&buf, 1, MPI_INT, 0, -3, d);
    CHECK(calls == 3 && rc == MPI_ERR_TAG && last_comm == d);

    /* Added class, code, string. */
    int newclass, newcode, lastused, flag;
    int *lastused_attr;
    OK(MPI_Add_error_class(&newclass));
    CHECK(newclass > MPI_ERR_LASTCODE);
    OK(MPI_Add_error_code(newclass, &newcode));
    CHECK(newcode != newclass);
    OK(MPI_Add_error_string(newcode, "a code of the program's own"));
    OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_LASTUSEDCODE, &lastused_attr, &flag));
    lastused = *lastused_attr;
    CHECK(flag && lastused >= newcode && lastused >= newclass);
    char s[MPI_MAX_ERROR_STRING];
    int len;
    OK(MPI_Error_string(newcode, s, &len));
    CHECK(strcmp(s, "a code of the program's own") == 0 && len == (int)strlen(s));
    OK(MPI_Error_class(newcode, &cls));
    CHECK(cls == newclass);
    OK(MPI_Error_class(newclass, &cls));
    CHECK(cls == newclass);
    /* An added code on a predefined class. */
    int code2;
    OK(MPI_Add_error_code(MPI_ERR_ARG, &code2));
    OK(MPI_Error_class(code2, &cls));
    CHECK(cls == MPI_ERR_ARG);

    /* Comm_call_errhandler calls the user handler with the code given. */
    OK(MPI_Comm_call_errhandler(c, newcode));
    CHECK(calls == 4 && last_code == newcode && last_comm == c);

    /* Bad arguments (under MPI_ERRORS_RETURN on MPI_COMM_WORLD). */
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    FAILS(MPI_ERR_ARG, MPI_Add_error_code(987654, &code2));
    FAILS(MPI_ERR_ARG, MPI_Add_error_string(987654, "x"));
    FAILS(MPI_ERR_ARG, MPI_Add_error_string(MPI_ERR_RANK, "x"));
    FAILS(MPI_ERR_ARG, MPI_Comm_set_errhandler(MPI_COMM_WORLD, (MPI_Errhandler)0x5555));
    FAILS(MPI_ERR_ARG, MPI_Comm_create_errhandler(NULL, &eh));
    FAILS(MPI_ERR_ARG, MPI_Error_string(987654, s, &len));

    /* Removing: a class with codes cannot go; a code with a string neither. */
    int c3, d3;
    OK(MPI_Add_error_class(&c3));
    OK(MPI_Add_error_code(c3, &d3));
    OK(MPI_Add_error_string(d3, "to be removed"));
    FAILS(MPI_ERR_ARG, MPI_Remove_error_class(c3));
    FAILS(MPI_ERR_ARG, MPI_Remove_error_code(d3));
    OK(MPI_Remove_error_string(d3));
    OK(MPI_Remove_error_code(d3));
    FAILS(MPI_ERR_ARG, MPI_Error_class(d3, &cls));
    OK(MPI_Remove_error_class(c3));
    FAILS(MPI_ERR_ARG, MPI_Remove_error_class(c3));

    /* The MPI-1 names. */
    MPI_Errhandler eh1;
    OK(MPI_Errhandler_create(handler, &eh1));
    OK(MPI_Errhandler_set(d, eh1));
    rc = MPI_Send(&buf, 1, MPI_INT, 0, -3, d);
    CHECK(rc == MPI_ERR_TAG && last_comm == d);
    calls--;
    OK(MPI_Errhandler_free(&eh1));

    /* Freeing the handler: the communicators it is set on keep it. */
    OK(MPI_Errhandler_free(&eh));
    CHECK(eh == MPI_ERRHANDLER_NULL);
    rc = MPI_Send(&buf, 1, MPI_INT, size + 1, 0, c);
    CHECK(calls == 5 && rc == MPI_ERR_RANK);

    OK(MPI_Comm_free(&d));
    OK(MPI_Comm_free(&c));
    report_ok("errhan");
    OK(MPI_Finalize());
    return 0;
}
