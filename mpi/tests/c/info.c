/* Info objects: create, set, get, get_valuelen, get_string, delete,
 * get_nkeys, get_nthkey, dup, free; MPI_INFO_ENV; the error classes of
 * bad keys, values and handles. */
#include <string.h>
#include "check.h"

int main(int argc, char **argv) {
    int size, flag, n, len;
    char v[MPI_MAX_INFO_VAL], k[MPI_MAX_INFO_KEY];
    OK(MPI_Init(&argc, &argv));
    OK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    OK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

    MPI_Info info, copy;
    OK(MPI_Info_create(&info));
    OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 0);
    OK(MPI_Info_set(info, "striping_factor", "4"));
    OK(MPI_Info_set(info, "cb_nodes", "2"));
    OK(MPI_Info_set(info, "striping_factor", "8")); /* replaces */
    OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 2);
    OK(MPI_Info_get_nthkey(info, 0, k));
    CHECK(strcmp(k, "striping_factor") == 0);
    OK(MPI_Info_get_nthkey(info, 1, k));
    CHECK(strcmp(k, "cb_nodes") == 0);
    OK(MPI_Info_get(info, "striping_factor", MPI_MAX_INFO_VAL - 1, v, &flag));
    CHECK(flag && strcmp(v, "8") == 0);
    OK(MPI_Info_get(info, "absent", MPI_MAX_INFO_VAL - 1, v, &flag));
    CHECK(!flag);
    OK(MPI_Info_get_valuelen(info, "cb_nodes", &len, &flag));
    CHECK(flag && len == 1);

    /* get_string: truncates to the buffer, reports the length needed. */
    OK(MPI_Info_set(info, "long", "abcdef"));
    char small[4];
    int buflen = sizeof small;
    OK(MPI_Info_get_string(info, "long", &buflen, small, &flag));
    CHECK(flag && buflen == 7 && strcmp(small, "abc") == 0);
    buflen = 0;
    OK(MPI_Info_get_string(info, "long", &buflen, NULL, &flag));
    CHECK(flag && buflen == 7);

    /* dup is a copy: changing one leaves the other. */
    OK(MPI_Info_dup(info, &copy));
    OK(MPI_Info_delete(info, "long"));
    OK(MPI_Info_get_nkeys(info, &n));
    CHECK(n == 2);
    OK(MPI_Info_get_nkeys(copy, &n));
    CHECK(n == 3);
    OK(MPI_Info_get(copy, "long", MPI_MAX_INFO_VAL - 1, v, &flag));
    CHECK(flag && strcmp(v, "abcdef") == 0);

    /* MPI_INFO_ENV: the job's size; read-only. */
    OK(MPI_Info_get(MPI_INFO_ENV, "maxprocs", MPI_MAX_INFO_VAL - 1, v, &flag));
    CHECK(flag && atoi(v) == size);
    FAILS(MPI_ERR_INFO, MPI_Info_set(MPI_INFO_ENV, "maxprocs", "1"));
    MPI_Info env = MPI_INFO_ENV;
    FAILS(MPI_ERR_INFO, MPI_Info_free(&env));

    /* Bad keys, values, handles. */
    char longkey[MPI_MAX_INFO_KEY + 1];
    memset(longkey, 'k', MPI_MAX_INFO_KEY);
    longkey[MPI_MAX_INFO_KEY] = 0;
    FAILS(MPI_ERR_INFO_KEY, MPI_Info_set(info, longkey, "x"));
    FAILS(MPI_ERR_INFO_KEY, MPI_Info_set(info, "", "x"));
    longkey[MPI_MAX_INFO_KEY - 1] = 0; /* 255 characters: allowed */
    OK(MPI_Info_set(info, longkey, "x"));
    static char longval[MPI_MAX_INFO_VAL + 1];
    memset(longval, 'v', MPI_MAX_INFO_VAL);
    FAILS(MPI_ERR_INFO_VALUE, MPI_Info_set(info, "k", longval));
    FAILS(MPI_ERR_INFO_NOKEY, MPI_Info_delete(info, "absent"));
    FAILS(MPI_ERR_ARG, MPI_Info_get_nthkey(info, 99, k));
    FAILS(MPI_ERR_INFO, MPI_Info_get_nkeys(MPI_INFO_NULL, &n));

    MPI_Info keep = info;
    OK(MPI_Info_free(&info));
    CHECK(info == MPI_INFO_NULL);
    FAILS(MPI_ERR_INFO, MPI_Info_get_nkeys(keep, &n));
    FAILS(MPI_ERR_INFO, MPI_Info_free(&keep));
    OK(MPI_Info_free(&copy));

    /* MPI_Info_create_env: a new object with MPI_INFO_ENV's keys. */
    MPI_Info envi;
    int envkeys, newkeys;
    OK(MPI_Info_create_env(argc, argv, &envi));
    OK(MPI_Info_get_nkeys(MPI_INFO_ENV, &envkeys));
    OK(MPI_Info_get_nkeys(envi, &newkeys));
    CHECK(envi != MPI_INFO_ENV && envkeys == newkeys);
    OK(MPI_Info_set(envi, "mine", "1"));
    OK(MPI_Info_free(&envi));
    report_ok("info");
    OK(MPI_Finalize());
    return 0;
}
