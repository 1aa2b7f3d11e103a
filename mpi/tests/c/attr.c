/* Attributes and keyvals: copy callbacks on MPI_Comm_dup/MPI_Type_dup,
 * delete callbacks on delete, replace and free (in the reverse order of
 * setting), the predefined callbacks, freed keyvals, names; bad arguments
 * under MPI_ERRORS_RETURN. */
#include <string.h>
#include "check.h"

static int copies, deletes;
static int order[8], norder;
static MPI_Comm deleted_on;

static int my_copy(MPI_Comm old, int key, void *extra, void *in, void *out, int *flag) {
    (void)old;
    (void)key;
    CHECK(extra == (void *)&copies);
    copies++;
    *(void **)out = (void *)((char *)in + 1000);
    *flag = 1;
    return MPI_SUCCESS;
}

static int my_delete(MPI_Comm c, int key, void *val, void *extra) {
    (void)key;
    (void)extra;
    deletes++;
    deleted_on = c;
    if (norder < 8) order[norder++] = (int)(MPI_Aint)val;
    /* A callback may call MPI. */
    int size;
    CHECK(MPI_Comm_size(c, &size) == MPI_SUCCESS);
    return MPI_SUCCESS;
}

static int failing_delete(MPI_Comm c, int key, void *val, void *extra) {
    (void)c;
    (void)key;
    (void)val;
    (void)extra;
    return MPI_ERR_OTHER;
}

static int type_copies;
static int type_copy(MPI_Datatype old, int key, void *extra, void *in, void *out, int *flag) {
    (void)old;
    (void)key;
    (void)extra;
    type_copies++;
    *(void **)out = in;
    *flag = 1;
    return MPI_SUCCESS;
}

static int self_deleted;
static int self_delete(MPI_Comm c, int key, void *val, void *extra) {
    (void)c;
    (void)key;
    (void)val;
    (void)extra;
    self_deleted++;
    return MPI_SUCCESS;
}

int main(int argc, char **argv) {
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    int k1, k2, k3, flag;
    void *v;

    /* The predefined attribute is still there. */
    int *tag_ub;
    OK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag));
    CHECK(flag && *tag_ub >= 32767);

    OK(MPI_Comm_create_keyval(my_copy, my_delete, &k1, &copies));
    OK(MPI_Comm_create_keyval(MPI_COMM_DUP_FN, my_delete, &k2, NULL));
    OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, MPI_COMM_NULL_DELETE_FN, &k3, NULL));
    CHECK(k1 != k2 && k2 != k3);

    MPI_Comm c;
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
    OK(MPI_Comm_get_attr(c, k1, &v, &flag));
    CHECK(!flag);
    OK(MPI_Comm_set_attr(c, k1, (void *)(MPI_Aint)1));
    OK(MPI_Comm_set_attr(c, k2, (void *)(MPI_Aint)2));
    OK(MPI_Comm_set_attr(c, k3, (void *)(MPI_Aint)3));
    OK(MPI_Comm_get_attr(c, k2, &v, &flag));
    CHECK(flag && v == (void *)(MPI_Aint)2);

    /* Replacing runs the delete callback on the old value. */
    OK(MPI_Comm_set_attr(c, k1, (void *)(MPI_Aint)11));
    CHECK(deletes == 1 && order[0] == 1 && deleted_on == c);

    /* Dup: my_copy copies k1 (value + 1000), DUP_FN copies k2, NULL_COPY_FN not k3. */
    MPI_Comm d;
    OK(MPI_Comm_dup(c, &d));
    CHECK(copies == 1);
    OK(MPI_Comm_get_attr(d, k1, &v, &flag));
    CHECK(flag && v == (void *)(MPI_Aint)1011);
    OK(MPI_Comm_get_attr(d, k2, &v, &flag));
    CHECK(flag && v == (void *)(MPI_Aint)2);
    OK(MPI_Comm_get_attr(d, k3, &v, &flag));
    CHECK(!flag);

    /* Delete: the callback runs; deleting again is MPI_ERR_KEYVAL. */
    deletes = 0;
    norder = 0;
    OK(MPI_Comm_delete_attr(c, k2));
    CHECK(deletes == 1 && order[0] == 2);
    OK(MPI_Comm_get_attr(c, k2, &v, &flag));
    CHECK(!flag);
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_delete_attr(c, k2));

    /* Free: delete callbacks in the reverse order of setting (k3 has none). */
    OK(MPI_Comm_set_attr(c, k2, (void *)(MPI_Aint)22));
    deletes = 0;
    norder = 0;
    OK(MPI_Comm_free(&c));
    CHECK(c == MPI_COMM_NULL);
    CHECK(deletes == 2 && order[0] == 22 && order[1] == 11);

    /* A freed keyval: its variable becomes MPI_KEYVAL_INVALID; the attribute
     * set with it stays, and its delete callback still runs on free. */
    int k1_copy = k1;
    OK(MPI_Comm_free_keyval(&k1));
    CHECK(k1 == MPI_KEYVAL_INVALID);
    OK(MPI_Comm_get_attr(d, k1_copy, &v, &flag));
    CHECK(flag && v == (void *)(MPI_Aint)1011);
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_set_attr(MPI_COMM_WORLD, k1_copy, NULL));
    /* Freed again while alive: accepted (as MPICH does). */
    int k1_again = k1_copy;
    OK(MPI_Comm_free_keyval(&k1_again));
    deletes = 0;
    norder = 0;
    OK(MPI_Comm_free(&d));
    CHECK(deletes == 2 && order[0] == 2 && order[1] == 1011);
    /* Now unused: gone. */
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_free_keyval(&k1_copy));

    /* A failing delete callback fails MPI_Comm_delete_attr with its code. */
    int kf;
    OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, failing_delete, &kf, NULL));
    OK(MPI_Comm_set_attr(MPI_COMM_WORLD, kf, NULL));
    FAILS(MPI_ERR_OTHER, MPI_Comm_delete_attr(MPI_COMM_WORLD, kf));

    /* Bad arguments. */
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_set_attr(MPI_COMM_WORLD, 424242, NULL));
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_get_attr(MPI_COMM_WORLD, 424242, &v, &flag));
    FAILS(MPI_ERR_COMM, MPI_Comm_set_attr(MPI_COMM_NULL, k2, NULL));
    FAILS(MPI_ERR_ARG, MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, NULL, NULL));
    int bad = 424242;
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_free_keyval(&bad));

    /* Datatype attributes: a comm keyval on a type is MPI_ERR_KEYVAL. */
    int tk;
    OK(MPI_Type_create_keyval(type_copy, MPI_TYPE_NULL_DELETE_FN, &tk, NULL));
    MPI_Datatype t, t2;
    OK(MPI_Type_contiguous(2, MPI_INT, &t));
    OK(MPI_Type_set_attr(t, tk, (void *)(MPI_Aint)7));
    OK(MPI_Type_dup(t, &t2));
    CHECK(type_copies == 1);
    OK(MPI_Type_get_attr(t2, tk, &v, &flag));
    CHECK(flag && v == (void *)(MPI_Aint)7);
    FAILS(MPI_ERR_KEYVAL, MPI_Type_set_attr(t, k2, NULL));
    FAILS(MPI_ERR_KEYVAL, MPI_Comm_set_attr(MPI_COMM_WORLD, tk, NULL));
    OK(MPI_Type_delete_attr(t, tk));
    OK(MPI_Type_get_attr(t, tk, &v, &flag));
    CHECK(!flag);
    OK(MPI_Type_free(&t));
    OK(MPI_Type_free(&t2));
    OK(MPI_Type_free_keyval(&tk));
    CHECK(tk == MPI_KEYVAL_INVALID);

    /* Names. */
    char name[MPI_MAX_OBJECT_NAME];
    int len;
    OK(MPI_Comm_get_name(MPI_COMM_WORLD, name, &len));
    CHECK(strcmp(name, "MPI_COMM_WORLD") == 0 && len == 14);
    OK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
    OK(MPI_Comm_get_name(c, name, &len));
    CHECK(len == 0 && name[0] == 0);
    OK(MPI_Comm_set_name(c, "my communicator"));
    OK(MPI_Comm_get_name(c, name, &len));
    CHECK(strcmp(name, "my communicator") == 0 && len == 15);
    OK(MPI_Comm_free(&c));
    OK(MPI_Type_get_name(MPI_INT, name, &len));
    CHECK(strcmp(name, "MPI_INT") == 0);
    OK(MPI_Type_contiguous(3, MPI_DOUBLE, &t));
    OK(MPI_Type_set_name(t, "triple"));
    OK(MPI_Type_get_name(t, name, &len));
    CHECK(strcmp(name, "triple") == 0 && len == 6);
    OK(MPI_Type_free(&t));
    FAILS(MPI_ERR_COMM, MPI_Comm_set_name(MPI_COMM_NULL, "x"));
    FAILS(MPI_ERR_ARG, MPI_Comm_set_name(MPI_COMM_WORLD, NULL));

    /* Attributes on MPI_COMM_SELF are deleted first thing in MPI_Finalize;
     * the line is printed before, the check after (rank 0 only prints). */
    int ks;
    OK(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, self_delete, &ks, NULL));
    OK(MPI_Comm_set_attr(MPI_COMM_SELF, ks, NULL));
    report_ok("attr");
    OK(MPI_Finalize());
    if (self_deleted != 1) {
        fprintf(stderr, "MPI_COMM_SELF's attribute was not deleted at MPI_Finalize\n");
        return 1;
    }
    return 0;
}
