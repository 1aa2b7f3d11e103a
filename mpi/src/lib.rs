//! # dos-mpi: the MPI C interface on dos
//!
//! This crate builds `libmpi.so` and `libmpi.a`: the MPI C functions
//! (`MPI_*`, each with its `PMPI_*` profiling entry point) implemented on the
//! `dos` crate, with the header `mpi/include/mpi.h` and the compiler wrappers
//! `dosmpicc`/`dosmpicxx` (`mpi/bin/`). It is a thin layer: communicators,
//! matching, protocols and collective algorithms are dos's own; this crate
//! maps handles to dos objects, checks arguments as the standard requires,
//! and turns dos's typed errors into MPI error classes.
//!
//! ```text
//! dosmpicc -O2 -o hello hello.c      # cc with -I, -L, -lmpi, rpath
//! dosrun -n 4 ./hello
//! dosmpicc -show                     # the command it would run
//! ```
//!
//! ## What is covered
//!
//! * **Environment** — `MPI_Init`, `MPI_Init_thread` (`provided` is at most
//!   `MPI_THREAD_FUNNELED`, dos's level), `MPI_Initialized`, `MPI_Finalize`,
//!   `MPI_Finalized`, `MPI_Abort` (through dos's abort: `dosrun` reports the
//!   rank as failed, with the exit status given), `MPI_Query_thread`,
//!   `MPI_Is_thread_main`, `MPI_Get_processor_name`,
//!   `MPI_Get_library_version`, `MPI_Get_version` (5.0), `MPI_Wtime` (the
//!   monotonic clock; not global), `MPI_Wtick`.
//! * **Communicators** — `MPI_COMM_WORLD`, `MPI_COMM_SELF`, `Comm_rank`,
//!   `Comm_size`, `Comm_dup`, `Comm_split` (`MPI_UNDEFINED` gives
//!   `MPI_COMM_NULL`), `Comm_split_type(MPI_COMM_TYPE_SHARED)` (one
//!   communicator per host), `Comm_free`, `Comm_compare`, `Comm_test_inter`,
//!   `Comm_get_attr` for the predefined attributes (`MPI_TAG_UB` is
//!   `INT_MAX`, `MPI_LASTUSEDCODE` follows `MPI_Add_error_code`),
//!   `Comm_create` (collective over the communicator),
//!   `Comm_create_group` (collective over the group's members only),
//!   `Comm_idup` (nonblocking: the root sends a context id of the idup
//!   range in a nonblocking broadcast; the communicator is made when the
//!   request completes),
//!   `Comm_get_parent` (`MPI_COMM_NULL`), `Comm_disconnect` (as `Comm_free`),
//!   `Comm_idup_with_info`.
//! * **Intercommunicators** (module `inter`) — `Intercomm_create` (the
//!   leaders talk over the peer communicator with the tag given),
//!   `Intercomm_create_from_groups` (MPI-4; the groups form over the
//!   world's processes, keyed by the string tag), `Intercomm_merge`
//!   (the `high = false` group first; on a tie the group whose leader has
//!   the lower world rank), `Comm_test_inter`, `Comm_remote_size`,
//!   `Comm_remote_group`; `Comm_size`/`rank`/`group` give the local group;
//!   `Comm_dup`/`idup`, `Comm_split` and `Comm_create` with MPI-2 semantics
//!   (each color/subset joins the remote processes of the same color/subset;
//!   `MPI_COMM_NULL` if there are none), `Comm_compare` (`MPI_CONGRUENT`
//!   when both groups match), `Comm_free`, names and attributes.
//!   Point-to-point in every form addresses the remote group (`MPI_SOURCE`
//!   is a remote rank). The collectives `Barrier`, `Bcast`, `Reduce`,
//!   `Allreduce`, `Gather(v)`, `Scatter(v)`, `Allgather(v)`,
//!   `Alltoall(v,w)`, `Reduce_scatter(_block)` follow the intercommunicator
//!   rules (`MPI_ROOT`/`MPI_PROC_NULL` in the root's group, the other
//!   group's data); their `I*` and persistent forms post their transfers
//!   in the call and complete in `Wait`/`Test` (reductions fold then).
//!   Functions defined on
//!   intracommunicators only (`Scan`/`Exscan`/`Iscan`/`Iexscan`,
//!   `Comm_split_type`, `Comm_create_group`, `Cart_create`, `Graph_create`,
//!   `Dist_graph_create*`, `Win_create`/`allocate*`, `File_open`, and
//!   `Intercomm_create` with an intercommunicator as local communicator)
//!   return `MPI_ERR_COMM` on one. `Comm_spawn` stays
//!   `MPI_ERR_UNSUPPORTED_OPERATION`.
//! * **Attributes and names** (module `attr`) — `Comm_create_keyval`,
//!   `Comm_free_keyval`, `Comm_set_attr`, `Comm_get_attr`,
//!   `Comm_delete_attr`, the same for `Type_*`, and `Win_create_keyval`/
//!   `free_keyval` (the windows use the same store): copy callbacks run on
//!   `Comm_dup`/`Type_dup` (`MPI_*_NULL_COPY_FN` never copies,
//!   `MPI_*_DUP_FN` copies the value), delete callbacks on delete, on
//!   replacing a value, and on `Comm_free`/`Type_free` in the reverse order
//!   of setting (`MPI_COMM_SELF`'s first thing in `MPI_Finalize`); a
//!   callback's error code fails the call; a freed keyval lives on while
//!   attributes use it; an unknown keyval or one of another kind is
//!   `MPI_ERR_KEYVAL`. `Comm_set_name`/`get_name` (`MPI_COMM_WORLD` and
//!   `MPI_COMM_SELF` are named so), `Type_set_name`/`get_name`.
//! * **Topologies** (module `topo`) — `Cart_create`, `Cart_get`,
//!   `Cart_rank`, `Cart_coords`, `Cart_shift`, `Cart_sub`, `Cart_map`,
//!   `Cartdim_get`, `Dims_create`, `Graph_create`, `Graph_get`,
//!   `Graph_neighbors(_count)`, `Graphdims_get`, `Graph_map`,
//!   `Dist_graph_create`, `Dist_graph_create_adjacent`,
//!   `Dist_graph_neighbors(_count)` (also on Cartesian and graph
//!   communicators), `Topo_test`. `reorder` keeps the ranks; processes
//!   beyond the topology's size get `MPI_COMM_NULL`; `Comm_dup` keeps the
//!   topology. Bad arguments: `MPI_ERR_TOPOLOGY` (no such topology),
//!   `MPI_ERR_DIMS`, `MPI_ERR_RANK`, `MPI_ERR_ARG`.
//! * **Neighbourhood collectives** (module `neighbor`) —
//!   `Neighbor_allgather(v)`, `Neighbor_alltoall(v,w)` and the `Ineighbor_*`
//!   forms (started in the call, unpacked at completion) on Cartesian, graph and distributed-graph
//!   communicators, one packed message per peer on the collective context.
//! * **Memory** — `Alloc_mem`/`Free_mem` (the C heap; hints ignored).
//! * **Groups** — `Comm_group`, `Group_size`, `Group_rank` (`MPI_UNDEFINED`
//!   for a non-member), `Group_incl`, `Group_excl`, `Group_range_incl`,
//!   `Group_range_excl`, `Group_union`, `Group_intersection`,
//!   `Group_difference` (an empty result is `MPI_GROUP_EMPTY`),
//!   `Group_compare`, `Group_translate_ranks` (`MPI_UNDEFINED` for a process
//!   not in the other group, `MPI_PROC_NULL` kept), `Group_free`; a rank
//!   outside the group or listed twice is `MPI_ERR_RANK`, an invalid or
//!   freed group `MPI_ERR_GROUP`.
//! * **Point-to-point** — `Send`, `Ssend`, `Rsend`, `Bsend` (the library
//!   copies the data, so it completes at once, within the buffer of
//!   `Buffer_attach(_c)`: `MPI_ERR_BUFFER` beyond it; none attached or
//!   `MPI_BUFFER_AUTOMATIC`: unbounded; `Buffer_detach(_c)`,
//!   `Buffer_flush`, `Buffer_iflush`), `Recv`, `Isend`, `Issend`, `Irsend`,
//!   `Ibsend`, `Irecv`, `Sendrecv`, `Sendrecv_replace`, MPI-4's
//!   `Isendrecv`, `Isendrecv_replace`, and the large-count `_c` form of
//!   each of these, `Probe`, `Iprobe`; `MPI_ANY_SOURCE`,
//!   `MPI_ANY_TAG` (with the sender and tag in the status), `MPI_PROC_NULL`,
//!   `MPI_STATUS(ES)_IGNORE`; a message longer than the receive buffer is
//!   `MPI_ERR_TRUNCATE`. Messages between two ranks on one communicator
//!   arrive in the order sent (dos's matching). A function that completes
//!   one operation successfully leaves its status's `MPI_ERROR` as the
//!   program set it (after a failure it holds the error class);
//!   `MPI_DATATYPE_NULL` is accepted with `MPI_PROC_NULL` as the peer.
//!   `Status_set_source`/`tag`/`error`/`cancelled` and MPI-4.1's
//!   `Status_get_source`/`tag`/`error`.
//! * **Generalized requests** — `Grequest_start`, `Grequest_complete`
//!   (the query function is called at `Grequest_complete`).
//! * **Requests** — `Wait`, `Test`, `Waitall`, `Testall`, `Waitany`,
//!   `Testany`, `Waitsome`, `Testsome` (`MPI_ERR_IN_STATUS` with each
//!   status's `MPI_ERROR`), `Request_free` (an active request still
//!   completes; a freed receive never matched is withdrawn at
//!   `MPI_Finalize`), `Request_get_status`, `Test_cancelled`, `Get_count`,
//!   `Get_elements`. A request the program never completed is withdrawn at
//!   `MPI_Finalize` rather than waited for.
//! * **Persistent requests** — `Send_init`, `Ssend_init`, `Rsend_init`,
//!   `Bsend_init`, `Recv_init`, `Start`, `Startall`: every `Wait*`/`Test*`
//!   form, `Request_get_status` and `Request_free` take them; a completed
//!   one becomes inactive and keeps its handle, an inactive one counts as
//!   `MPI_REQUEST_NULL`; starting an active one is `MPI_ERR_REQUEST`.
//! * **Matched probes and cancel** — `Mprobe`, `Improbe` (`MPI_PROC_NULL`
//!   gives `MPI_MESSAGE_NO_PROC`), `Mrecv`, `Imrecv` (receives at once: the
//!   message is matched already); `Cancel` withdraws a receive not yet
//!   matched (`Test_cancelled` then says so); a send is not cancelled, as the
//!   standard allows: it completes normally.
//! * **Datatypes** — every predefined datatype of the standard, with the
//!   sizes of LP64 Linux; derived datatypes: `Type_contiguous`, `vector`,
//!   `create_hvector`, `indexed`, `create_hindexed`,
//!   `create_indexed_block`, `create_hindexed_block`, `create_struct`
//!   (upper bound padded to the strictest alignment inside, as C lays out
//!   structs), `create_resized`, `create_subarray` (`MPI_ORDER_C` and
//!   `MPI_ORDER_FORTRAN`); `Type_commit`, `Type_free` (types built from a
//!   freed one keep working), `Type_dup`; `Type_size(_x)`,
//!   `Type_get_extent(_x)`, `Type_get_true_extent(_x)`; `Get_count`
//!   (`MPI_UNDEFINED` for a partial element), `Get_elements(_x)` (basic
//!   elements, also of a partial element); `Pack`, `Unpack`, `Pack_size`.
//!   A type is compiled when built to a flattened list of `(offset, length)`
//!   runs (module `dtype`, checked against a serial model by property
//!   tests). A *dense* type (one run per element, extent equal to size)
//!   moves with zero copy like a predefined one; any other is packed into a
//!   temporary buffer before sending and unpacked after receiving, in
//!   `Send`/`Ssend`/`Rsend`/`Bsend`, `Recv`, `Sendrecv(_replace)`, `Isend`/`Irsend`/
//!   `Ibsend` (a packed copy sent in the background: the request completes
//!   at once), `Issend` (the packed copy lives with the request), `Irecv`
//!   (received into a temporary, unpacked as far as the message goes when
//!   the request completes: the request's completion hook, module
//!   `request`), `Bcast`, `Gather(v)`, `Scatter(v)`, `Allgather(v)`,
//!   `Alltoall(v,w)` and their nonblocking forms (including `MPI_IN_PLACE`;
//!   each block packed in turn).
//!   `Type_get_envelope`/`Type_get_contents` give back the constructor and
//!   its arguments (derived types among them as new handles).
//!   Messages match by bytes of the type
//!   signature. Bad arguments: a negative count or block length, or a type
//!   whose size or bounds overflow, is `MPI_ERR_COUNT`; an uncommitted type
//!   in communication, `MPI_DATATYPE_NULL`, or freeing a predefined type is
//!   `MPI_ERR_TYPE`; a malformed subarray `MPI_ERR_ARG`; `Pack` beyond the
//!   output or `Unpack` beyond the input `MPI_ERR_TRUNCATE`.
//! * **Collectives** — `Barrier`, `Bcast`, `Reduce`, `Allreduce`, `Gather(v)`,
//!   `Scatter(v)`, `Allgather(v)`, `Alltoall(v)`, `Alltoallw` (a datatype and
//!   a byte displacement per block), `Reduce_scatter(_block)`, `Scan`,
//!   `Exscan`, `Reduce_local`, with `MPI_IN_PLACE` wherever the standard
//!   allows it, on dos's algorithms. Every collective below (blocking,
//!   nonblocking, persistent, neighbourhood) also has its MPI-4
//!   large-count form (`MPI_Bcast_c`, `MPI_Ialltoallw_c`,
//!   `MPI_Allreduce_init_c`, ...: `MPI_Count` counts, `MPI_Aint`
//!   displacements) from the same code (module `large`): a count is checked
//!   into memory's range, never truncated; where an inner path takes `int`
//!   counts (intercommunicators, derived datatypes in the v/w-forms) a
//!   larger one is `MPI_ERR_COUNT`. Every predefined operation on the types the
//!   standard allows it for (`MPI_SUM`/`PROD` on integers, floats and
//!   complex; `MIN`/`MAX` on integers and floats; logical ones on integers
//!   and booleans; bitwise ones on integers and `MPI_BYTE`;
//!   `MINLOC`/`MAXLOC` on the pair types); anything else is `MPI_ERR_OP`,
//!   also a predefined operation on a derived datatype.
//! * **Nonblocking collectives** — `Ibarrier`, `Ibcast`, `Ireduce`,
//!   `Iallreduce`, `Igather(v)`, `Iscatter(v)`, `Iallgather(v)`,
//!   `Ialltoall(v,w)`, `Ireduce_scatter(_block)`, `Iscan`, `Iexscan` (module
//!   `nbc`), with `MPI_IN_PLACE` and derived datatypes as in the blocking
//!   forms, on dos's own nonblocking collectives (schedules run by dos's
//!   engine, not a blocking collective in a thread). Their requests are
//!   ordinary ones: every `Wait*`/`Test*` form completes them, mixed with
//!   point-to-point requests; any number may be outstanding, on one
//!   communicator or several. `Request_free` of one is `MPI_ERR_REQUEST`
//!   (erroneous in the standard). Progress is weak, as in dos: a schedule
//!   advances inside MPI calls (any wait, test, send, receive, probe or
//!   collective), not while the program computes outside MPI.
//! * **Persistent collectives** (MPI-4) — `Barrier_init`, `Bcast_init`,
//!   `Reduce_init`, `Allreduce_init`, `Gather(v)_init`, `Scatter(v)_init`,
//!   `Allgather(v)_init`, `Alltoall(v,w)_init`, `Reduce_scatter(_block)_init`,
//!   `Scan_init`, `Exscan_init`, and the neighbourhood ones
//!   (`Neighbor_allgather(v)_init`, `Neighbor_alltoall(v,w)_init`): each `MPI_Start`/`Startall` starts the
//!   nonblocking collective with the arguments given at init (checked then:
//!   a bad argument is the error of `MPI_Start`); the info argument is
//!   ignored. Each has a context of its own, made at init (a duplicate of
//!   the communicator kept until `MPI_Finalize`), so they match in init
//!   order whatever the order of the starts, as MPI-4 says.
//! * **User operations** — `Op_create` (commutative or not), `Op_create_c`
//!   (MPI-4: the function's length is an `MPI_Count`, so one call covers
//!   any count; an `Op_create` function is called in chunks of at most
//!   `INT_MAX` elements where the elements are a typed slice, and a larger
//!   count is `MPI_ERR_COUNT` where it takes one call), `Op_free`,
//!   `Op_commutative`, in every reduction above: the C function is called on
//!   whole buffers with the datatype's handle, and a non-commutative
//!   operation is combined in rank order. On every datatype: one dos
//!   reduces as a typed slice gets the function on whole buffers; any other
//!   (holes, mixed basic types, opaque predefined ones such as
//!   `MPI_REAL16`) takes `userop::General`: contributions travel packed and
//!   the function is called on buffers laid out as the datatype says, with
//!   the datatype's own handle, in rank order (blocking, nonblocking and
//!   persistent forms, and `Reduce_local`; the nonblocking ones fold when
//!   the request completes). A freed operation is
//!   `MPI_ERR_OP`.
//! * **`long double`** — `MPI_LONG_DOUBLE`, `MPI_C_LONG_DOUBLE_COMPLEX`
//!   and `MPI_LONG_DOUBLE_INT` reduce with `SUM`/`PROD`/`MIN`/`MAX` (`SUM`
//!   and `PROD` for the complex one, `MINLOC`/`MAXLOC` for the pair) on the
//!   x87 unit, rounding as the C program's own `long double` does
//!   (`ldouble`; x86-64 only).
//! * **Pair types** — `MPI_DOUBLE_INT`, `MPI_LONG_INT`, `MPI_SHORT_INT`
//!   and `MPI_LONG_DOUBLE_INT` have the size of their two members (12, 12,
//!   6, 20) and the extent of the C struct (16, 16, 8, 32), as the standard
//!   and MPICH say: they move packed like derived types (the receiver's
//!   padding is not written) and count two basic elements each; reductions
//!   and one-sided accumulates combine them as the C structs.
//! * **More datatypes** — `Type_create_darray` (block, cyclic(k), none; C
//!   and Fortran order; row-major process grids), `Pack_external`,
//!   `Unpack_external`, `Pack_external_size` (`"external32"`: big-endian,
//!   the standard's sizes, `long double` as binary128; module `external`),
//!   `Type_match_size`, `Type_create_f90_real/complex/integer` (the matching
//!   predefined type with an `MPI_COMBINER_F90_*` envelope), the `_c`
//!   constructors `Type_contiguous_c`, `Type_vector_c`,
//!   `Type_create_hindexed_c`, `Type_create_indexed_block_c`,
//!   `Type_get_extent_c`, `Type_get_true_extent_c`, `Get_elements_c`
//!   (counts beyond `INT_MAX` in a type's envelope are `MPI_ERR_COUNT`),
//!   `Status_set_elements(_x,_c)`, and `Pack`/`Unpack`/sends from
//!   `MPI_BOTTOM` with a type of absolute addresses.
//! * **Reductions on derived datatypes** — a derived type whose elements
//!   are one dense run of a single predefined type (`Type_contiguous(4,
//!   MPI_DOUBLE)`, a struct of ints without holes, a contiguous run of
//!   `MPI_DOUBLE_INT`) is reduced as that type by the predefined
//!   operations; any other derived type (with holes, or mixing types) is
//!   `MPI_ERR_OP` for them, as the standard allows. A user operation on any
//!   derived type takes the general path above: its function gets the
//!   program's datatype and a count of its elements.
//! * **Errors** — `MPI_ERRORS_ARE_FATAL` (the default: prints the function,
//!   the class and the reason, then aborts the job through dos),
//!   `MPI_ERRORS_ABORT`, `MPI_ERRORS_RETURN`, and the program's own:
//!   `Comm_create_errhandler` (the function is called with the
//!   communicator and the error code of any error raised under it, then the
//!   MPI function returns the code; the generic pieces in `error` let files
//!   and windows make theirs); `Comm_set_errhandler`, `Comm_get_errhandler`
//!   (inherited by `Comm_dup`), `Errhandler_free` (the objects it is set on
//!   keep it), `Comm_call_errhandler`, `Add_error_class`, `Add_error_code`,
//!   `Add_error_string` (classes and codes above `MPI_ERR_LASTCODE`),
//!   `Error_string`, `Error_class`. Arguments are checked before anything is
//!   sent: a bad rank (`MPI_ERR_RANK`), count (`MPI_ERR_COUNT`), datatype
//!   (`MPI_ERR_TYPE`), communicator (`MPI_ERR_COMM`), root (`MPI_ERR_ROOT`),
//!   tag (`MPI_ERR_TAG`), operation (`MPI_ERR_OP`), a null buffer with a
//!   nonzero count (`MPI_ERR_BUFFER`), a null output pointer (`MPI_ERR_ARG`),
//!   an invalid request (`MPI_ERR_REQUEST`). A panic inside the library is
//!   caught and becomes `MPI_ERR_INTERN`: nothing unwinds into C.
//! * **Info objects** — `Info_create`, `Info_set`, `Info_get`,
//!   `Info_get_valuelen`, `Info_get_string`, `Info_delete`,
//!   `Info_get_nkeys`, `Info_get_nthkey`, `Info_dup`, `Info_free`;
//!   `MPI_INFO_NULL`, and `MPI_INFO_ENV` (read-only: `maxprocs`, `host`).
//!   They work before `MPI_Init` and after `MPI_Finalize` too (MPI-4).
//!   A key of 0 or `MPI_MAX_INFO_KEY` characters or more is
//!   `MPI_ERR_INFO_KEY`, a value too long `MPI_ERR_INFO_VALUE`, deleting an
//!   absent key `MPI_ERR_INFO_NOKEY`, an invalid handle `MPI_ERR_INFO`.
//!   Functions taking an info argument ignore its hints for now.
//! * **MPI-IO** (module `io`) — files of the job's dosfs (`dosrun --fs DIR`,
//!   or `DOSFS=addrfile` for a standing one; every name is a dosfs path,
//!   a relative one from its root, `dosfs:` accepted as a prefix, other
//!   ROMIO prefixes `MPI_ERR_BAD_FILE`, no dosfs `MPI_ERR_IO`) on
//!   `dos::io`: `File_open` (collective; every amode flag, with
//!   `MPI_ERR_AMODE`, `MPI_ERR_NO_SUCH_FILE`, `MPI_ERR_FILE_EXISTS`,
//!   `MPI_ERR_NOT_SAME`), `close` (`DELETE_ON_CLOSE`), `delete`,
//!   `read_at`/`write_at`, `read_at_all`/`write_at_all` (two-phase),
//!   `iread_at`/`iwrite_at`/`iread_at_all`/`iwrite_at_all` and the
//!   individual-pointer forms `read`/`write`/`read_all`/`write_all`/`iread`/
//!   `iwrite`/`iread_all`/`iwrite_all` (the nonblocking ones complete in the
//!   call), `seek`, `get_position`, `get_byte_offset`, `set_view`/`get_view`
//!   (etype and filetype from any datatype above: its flattened runs are
//!   the `dos::io::View`; data representations `native`, `internal` and
//!   `external32`, the last converted on the way for types of the same
//!   size there), `sync`, `get_size`/`set_size`/`preallocate`,
//!   `get_amode`, `get_group`, `set_info`/`get_info` (`striping_unit`,
//!   `striping_factor`, `cb_nodes`, `cb_buffer_size`, `romio_cb_*`,
//!   `romio_ds_*` applied at open; others kept), `set_atomicity`/
//!   `get_atomicity`, `set_errhandler`/`get_errhandler` (files return
//!   errors by default: `MPI_ERRORS_RETURN`), `call_errhandler`,
//!   `get_type_extent`; `MPI_FILE_NULL`; the shared file pointer
//!   (`read_shared`, `write_shared`, `iread_shared`, `iwrite_shared`,
//!   `read_ordered`, `write_ordered`, `seek_shared`, `get_position_shared`:
//!   an atomic counter in a dos window at rank 0), the split collectives
//!   (`_begin`/`_end`: the transfer is done in `_begin`). IOR
//!   (`-a MPIIO`) runs on it: `CONFORMANCE.md`.
//! * **One-sided** (module `rma`, on dos's windows, `dos::rma`) —
//!   `Win_create` (the caller's memory, reached through dos's active
//!   messages), `Win_allocate` (memory dos allocates: ranks of one node map
//!   each other's parts, so their puts, gets and accumulates are plain copies
//!   under the window's accumulate lock, no message), `Win_allocate_shared`
//!   and `Win_shared_query` (every rank of the node communicator reaches the
//!   others' parts with loads and stores; rank 0 allocates them all, one
//!   after the other, the standard's default contiguous layout;
//!   `Win_shared_query` answers on every flavor, memory not reachable here
//!   being size 0 and a null base),
//!   `Win_create_dynamic`, `Win_attach`, `Win_detach` (dos's windows have
//!   fixed memory, so the data path of a dynamic window is built on dos's
//!   RPC: each operation is a call of one handler at the target, which
//!   checks the address range against what is attached there and applies
//!   it under one lock; a round trip each, complete when it returns; the
//!   synchronization is an empty dos window's), `Win_free`;
//!   synchronization: `Win_fence` (the `MPI_MODE_*` assertions
//!   accepted, `NOSUCCEED` ends the epoch), `Win_post`/`start`/`complete`/
//!   `wait`/`test`, `Win_lock`/`unlock` (shared and exclusive),
//!   `Win_lock_all`/`unlock_all`, `Win_flush(_all)`, `Win_flush_local(_all)`
//!   (complete at the target too), `Win_sync`; communication: `Put`, `Get`,
//!   `Accumulate`, `Get_accumulate`, `Fetch_and_op`, `Compare_and_swap`,
//!   and `Rput`, `Rget`, `Raccumulate`, `Rget_accumulate` (passive-target
//!   epochs only, `MPI_PROC_NULL` as a target aside; their requests are complete when returned: the origin
//!   buffer is free and a get's data is in place; every `Wait*`/`Test*` takes
//!   them). Derived datatypes on both sides: the origin's packed, the
//!   target's cut into contiguous runs. Accumulates take every predefined
//!   operation on the types the standard allows it for (`SUM`, `PROD`,
//!   `MIN`, `MAX` on integers and floats, `SUM`/`PROD` on complex; bitwise
//!   on integers and `MPI_BYTE`; `LAND`/`LOR`/`LXOR` on integers and
//!   booleans; `MINLOC`/`MAXLOC` on the pair types), `MPI_REPLACE` and
//!   `MPI_NO_OP` on any type; they run at the target (or in place for a
//!   mapped part) under the window's accumulate lock, so accumulates with
//!   the same basic type are atomic per element, fetching or not, as the
//!   standard requires; `Compare_and_swap` on integer, logical and byte
//!   types; `long double` (sums, products, min, max, `MINLOC`/`MAXLOC` on
//!   `MPI_LONG_DOUBLE_INT`) with the x87 arithmetic of module `ldouble`,
//!   lent to dos's accumulates (`dos::rma::raw::set_foreign`). The basic
//!   type of an accumulate is that of the origin or target datatype,
//!   whichever is predefined, or the one basic type a derived datatype is
//!   made of; derived types of the padded pairs (`MPI_DOUBLE_INT`,
//!   `MPI_LONG_INT`, `MPI_LONG_DOUBLE_INT`) combine each pair as its C
//!   struct. A derived origin may address memory from `MPI_BOTTOM`. `Win_get_group`, `Win_get_attr`
//!   (`MPI_WIN_BASE`, `MPI_WIN_SIZE`, `MPI_WIN_DISP_UNIT`,
//!   `MPI_WIN_CREATE_FLAVOR`, `MPI_WIN_MODEL` = `MPI_WIN_UNIFIED`),
//!   `Win_set/get_errhandler` (a window's errors go to its own handler,
//!   `MPI_ERRORS_ARE_FATAL` by default), `Win_set/get_info` (kept, no hint
//!   changes anything), `Win_set/get_name`. Errors: a bad rank
//!   (`MPI_ERR_RANK`), a negative displacement or `disp_unit`
//!   (`MPI_ERR_DISP`), a negative size (`MPI_ERR_SIZE`), the wrong flavor
//!   (`MPI_ERR_RMA_FLAVOR`), memory attached twice or not attached
//!   (`MPI_ERR_RMA_ATTACH`), an access outside
//!   the target's window (`MPI_ERR_RMA_RANGE`, before anything is sent),
//!   communication outside an epoch that reaches the target, an unlock
//!   without a lock, a flush outside a passive-target epoch, a second lock,
//!   freeing a window inside an epoch (`MPI_ERR_RMA_SYNC`), an invalid or
//!   freed window (`MPI_ERR_WIN`), a bad lock type (`MPI_ERR_LOCKTYPE`) or
//!   assertion (`MPI_ERR_ASSERT`), an operation not defined on the type
//!   (`MPI_ERR_OP`), origin and target data of different sizes
//!   (`MPI_ERR_TYPE`). Tests: `mpi/tests/c/rma_ops.c` (every synchronization
//!   mode and operation against a serial model, shared windows, derived
//!   types), `rma_dynamic.c` and `rma_errors.c`.
//! * `MPI_Comm_spawn` is `MPI_ERR_UNSUPPORTED_OPERATION`: `dosrun` starts
//!   every process.
//! * Small helpers that common benchmark code calls: `Get_address`, and the
//!   handle conversions `MPI_*_c2f`/`MPI_*_f2c` (the handle's bits as an
//!   `MPI_Fint`: every handle of dos fits in 31 bits; rsmpi calls them).
//!   Functions of the groups below that such code references (sessions)
//!   exist so that it links, and raise
//!   `MPI_ERR_UNSUPPORTED_OPERATION` naming themselves when called.
//! * **rsmpi** (the `mpi` crate) builds against this library: its
//!   `build-probe-mpi` runs `$MPICC -show` (`MPICC=mpi/bin/dosmpicc`; `-show`
//!   alone prints the full command with `-I`, `-L`, `-l`), and `mpi-sys`'s
//!   bindgen reads `mpi.h`. `ci/rsmpi.sh` builds dosbench with `--features
//!   mpi` this way (target/rsmpi) and runs it under dosrun (the library is
//!   found through `LD_LIBRARY_PATH`: rsmpi passes no rpath).
//!
//! ## Not yet
//!
//! User operations on derived types with holes or of mixed types in the
//! nonblocking and persistent reductions;
//! `Request_free` of an active
//! noncontiguous `Irecv`/`Issend` (`MPI_ERR_UNSUPPORTED_OPERATION`: complete
//! it instead); the checks of a persistent collective's arguments at init
//! (they are checked at `MPI_Start`);
//! the large-count `_c` constructors not listed above (`Type_indexed_c`,
//! `Type_create_struct_c`...); the MPI-1 functions removed in MPI-3.0
//! (`MPI_Type_extent`/`lb`/`ub`/`hvector`/`hindexed`/`struct`,
//! `MPI_LB`/`MPI_UB`), which the standard ABI does not have either;
//! accumulates on derived types of several basic types (other than
//! `MPI_REPLACE`/`MPI_NO_OP`) or of `MPI_SHORT_INT`; user error handlers
//! on windows; MPI-IO's `external32` for types whose size differs there
//! (`MPI_LONG`...); `MPI_Remove_error_*`;
//! the large-count `_c` forms beyond those of point-to-point, the
//! collectives, `Op_create_c`, `Get_count_c` and `Type_size_c`; the
//! per-communicator and per-session buffers of
//! MPI-4.1 (`MPI_Comm_attach_buffer`, ...); sessions; `MPI_T`. Fortran is out of scope (no `mpif.h`,
//! no `mpi` module). These follow in later sessions of issue 12; dos
//! itself already has most of the machinery (see its crate docs).
//!
//! ## Threads
//!
//! dos offers `MPI_THREAD_FUNNELED`: the thread that called `MPI_Init`
//! makes the MPI calls. The library's state is that thread's; another
//! thread calling MPI gets `MPI_ERR_OTHER` ("MPI_Init has not been called
//! on this thread"). `MPI_Initialized`, `MPI_Finalized`, `MPI_Wtime` and
//! `MPI_Wtick` may be called from any thread.
//!
//! ## The ABI
//!
//! `mpi.h` uses the representation of the MPI-5 standard ABI: handles are
//! pointers to incomplete structs (`struct MPI_ABI_Comm *`, ...), the
//! predefined handles are the small integer values of the ABI tables
//! (`MPI_COMM_WORLD` is `0x101`, `MPI_INT` `0x209`, `MPI_SUM` `0x21`, ...),
//! `MPI_Status` is 8 ints with `MPI_SOURCE`, `MPI_TAG`, `MPI_ERROR` first,
//! `MPI_Aint`/`MPI_Count`/`MPI_Offset` are 64 bits, and every other
//! constant takes the ABI's value: error classes, sentinels
//! (`MPI_ANY_SOURCE` = -1, `MPI_ANY_TAG` = -2, `MPI_PROC_NULL` = -3,
//! `MPI_ROOT` = -4, `MPI_UNDEFINED` = -32766, `MPI_KEYVAL_INVALID` = 0),
//! thread levels (0, 1024, 2048, 4096), comparison results (201-204), split
//! types (221-224), attribute keys (`MPI_TAG_UB` 501..., `MPI_WIN_BASE`
//! 601...), lock types, window flavors and models, seek whence values,
//! `MPI_DISPLACEMENT_CURRENT`. The values were read from the ABI header that
//! MPICH publishes (`src/binding/abi/mpi_abi.h`, MPICH 4.3+) and written
//! into our own header and `abi.rs`.
//!
//! The check: `cargo test -p dos-mpi --lib header_check` compiles every
//! constant of `mpi.h` and compares it with the library's values; with
//! `MPI_ABI_H=/path/to/mpi_abi.h` it also compiles the constants `mpi.h`
//! shares with that header against it and requires equal values (all 287
//! names of `mpi.h` are in MPICH's header at 6a79bf6, and all 287 agree;
//! without the variable that part is skipped).
//!
//! How far binary compatibility holds: a C program compiled against this
//! `mpi.h` passes and receives the bits the ABI defines for every
//! constant, predefined handle and type that `mpi.h` declares, and
//! `MPI_Status` has the ABI's layout (8 ints, the three public fields
//! first; the five private ints are dos's own: bytes received and the
//! cancelled flag). A binary built for the standard ABI (MPICH 4.3's
//! `mpicc_abi`, Open MPI 6's `libmpi_abi`) that calls only functions this
//! library exports should therefore run against dos's `libmpi.so` once it
//! is loaded under the ABI library's name (`libmpi_abi.so` in those
//! implementations: not provided here; a symlink or `LD_PRELOAD` would be
//! the experiment). What still differs:
//! * functions: of the 662 functions in MPICH's `mpi_abi.h`, about 280 are
//!   not exported yet (counted with `nm -D` at this branch's base): 43
//!   `MPI_T_*` tool functions, ~135 large-count `*_c` forms, the 22 ABI
//!   handle conversions `MPI_*_toint`/`MPI_*_fromint` (dos has the older
//!   `*_c2f`/`*_f2c`), `MPI_Abi_get_version`/`MPI_Abi_get_info` and the
//!   Fortran-info calls, sessions,
//!   partitioned communication, dynamic processes (ports, connect/accept,
//!   name publishing), the MPI-4.1 per-communicator and per-session buffer
//!   calls. A binary calling one fails at load time
//!   (unresolved symbol) rather than misbehaving;
//! * constants: 78 names of `mpi_abi.h` are not in `mpi.h` (the `MPI_T_*`
//!   enumerations, `MPI_ABI_VERSION`/`SUBVERSION`, `MPI_ERR_ABI`,
//!   `MPI_LOGICAL1..16`, `MPI_BUFFER_AUTOMATIC`, ...): a binary using them
//!   passes values this library does not know and gets an error class;
//! * nothing has been verified by running an ABI-built binary against dos:
//!   the claim rests on the header comparison above.
//!
//! ## Layout of the crate
//!
//! `abi` (constants and the status), `state` (the dos world and the handle
//! tables: slabs, communicators from `0x10000` and requests from
//! `0x4000_0000` in steps of 8, so a lookup is an index), `error` (classes,
//! strings, handlers), `ptr` (the checked reads and writes through C
//! pointers), `datatype` (predefined types and the table of derived ones),
//! `dtype` (derived types compiled to runs, sans-IO), `reduce` (predefined
//! and user operations as dos `Op`s), `userop` (`Op_create`), one module per
//! group of functions: `env`, `comm`, `group`, `p2p`, `persist`, `request`,
//! `coll`, `nbc` (nonblocking collectives), `info`, `types` (constructors,
//! `Pack`, envelopes), `io` (MPI-IO), `rma` (windows), `attr` (attributes,
//! keyvals, names), `topo` (topologies),
//! and `later` (the helpers and the not-yet functions above).
//!
//! ## Performance
//!
//! OSU's latency, bandwidth and allreduce run on this library;
//! `CONFORMANCE.md` has them side by side with native dosbench and Open
//! MPI. Measured so far on a loaded machine: allreduce close to native dos
//! (a few tens of nanoseconds more per call for tiny messages), latency
//! not distinguishable from native within that machine's scatter, and
//! small-message bandwidth (1 to 256 bytes, windows of 64 nonblocking sends)
//! at about 0.4 to 0.6 of native: the C layer's own cost per request
//! (`mpi/bench/callcost.c`; about 430 instructions for an `MPI_Isend`, 510
//! per request in `MPI_Waitall`, 184 for `MPI_Comm_size`: the thread-local
//! state through `__tls_get_addr`, a `RefCell`, the request table, the
//! `catch_unwind` wrapper), still to be cut. Session 8 made the request
//! entry smaller and `MPI_Waitall` allocation-free (callgrind, a rank
//! sending to itself, inclusive of dos: 790 to 753 instructions per request
//! in `Waitall`, 548 to 480 per `MPI_Wait`); small-message bandwidth is
//! still about half of native (CONFORMANCE.md). Session 9 took the state
//! and the window table out of thread-local storage (a process-wide cell
//! reached by the `MPI_Init` thread only, `state::Local`), completes
//! requests that have finished inside the table (`Wait`, `Test`,
//! `Waitall`: no move of the entry, one engine entry through
//! `DetachedRequest::try_take`), waits for the others with only their dos
//! request out of the table, and sends a put of one predefined type inside
//! a lock, and its flush, straight to dos's window; the counts before and
//! after are in BENCHMARKS.md ("The C layer's hot path",
//! `mpi/bench/callgrind.sh`). Every exported function is written once
//! as `PMPI_X`, and `MPI_X` forwards to it (the profiling interface: a tool
//! may define its own `MPI_X` and call `PMPI_X`).
//!
//! Session 12 made the wrapper itself cheap instead of routing around it:
//! an error (`error::Error`) is one pointer, so the `R<()>` of every body
//! is a register and `?` on success a test; `error::finish` is inlined
//! into each exported function, with the handler's dispatch, the panic's
//! message and the error's box on `#[cold]` paths (`catch_unwind` stays: a
//! panic inside dos is `MPI_ERR_INTERN` through the handler, never an
//! unwind into C). `MPI_Send`, `MPI_Recv`, `MPI_Isend` and `MPI_Irecv`
//! (and their `_c` forms, the same code) have one path each again; their
//! common case is a few compares at its head. `MPI_Allreduce` checks a
//! predefined type and operation first. Counts per call in BENCHMARKS.md
//! ("Session 12: the C layer's wrapper").
#![allow(unused_unsafe)]
#![allow(clippy::missing_safety_doc)]

/// Defines `PMPI_X` with the body (a block returning [`error::R`]), run
/// under the error handler of the communicator given after `on`, and
/// `MPI_X` forwarding to it.
macro_rules! mpi_fn {
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident ( $($a:ident : $t:ty),* $(,)? ) on $comm:expr => $body:block
    ) => {
        $(#[doc = $doc])*
        ///
        /// # Safety
        /// Every pointer argument valid as the MPI standard requires of it.
        #[no_mangle]
        pub unsafe extern "C" fn $pmpi($($a: $t),*) -> ::std::ffi::c_int {
            let comm_for_errors: $crate::abi::Handle = $comm;
            $crate::error::finish(stringify!($mpi), comm_for_errors, || {
                // SAFETY: the pointers are the C caller's, valid as the MPI
                // standard requires of them (this function's contract).
                unsafe { $body }
            })
        }

        #[doc = concat!("`", stringify!($mpi), "`: forwards to [`", stringify!($pmpi), "`] (the profiling interface).")]
        ///
        /// # Safety
        /// As for the profiling entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $mpi($($a: $t),*) -> ::std::ffi::c_int {
            // SAFETY: the same contract as the profiling entry point's.
            unsafe { $pmpi($($a),*) }
        }
    };
}

/// Defines a collective once for both count widths: a core
/// `unsafe fn $core<C: Wide, D: Wide>` holding the body (`C` the type of
/// counts, `D` of displacements), `MPI_X`/`PMPI_X` with `int` for both, and
/// `MPI_X_c`/`PMPI_X_c` with `MPI_Count` and `MPI_Aint` (see
/// [`large`](crate::large)). Argument types name `C` and `D`; the file
/// imports `crate::large::{C, D}` (the `int` forms' types) and the `_c`
/// forms shadow them in a block of their own.
macro_rules! coll_fn {
    (
        $(#[doc = $doc:literal])*
        fn $mpi:ident / $pmpi:ident, $mpic:ident / $pmpic:ident = $core:ident ( $($a:ident : $t:ty),* $(,)? ) on $comm:expr => $body:block
    ) => {
        /// The core of
        #[doc = concat!("`", stringify!($mpi), "` and `", stringify!($mpic), "`.")]
        ///
        /// # Safety
        /// Every pointer argument valid as the MPI standard requires of it.
        #[allow(clippy::too_many_arguments, unused_unsafe)]
        pub(crate) unsafe fn $core<C: $crate::large::Wide, D: $crate::large::Wide>($($a: $t),*) -> $crate::error::R<()> {
            // SAFETY: this function's contract.
            unsafe { $body }
        }

        mpi_fn! {
            $(#[doc = $doc])*
            fn $mpi / $pmpi ($($a: $t),*) on $comm => { $core::<C, D>($($a),*) }
        }

        const _: () = {
            type C = $crate::large::Count;
            type D = $crate::large::Aint;
            mpi_fn! {
                $(#[doc = $doc])*
                /// (The large-count form, MPI-4.)
                fn $mpic / $pmpic ($($a: $t),*) on $comm => { $core::<C, D>($($a),*) }
            }
        };
    };
}

pub mod abi;
mod attr;
mod bsend;
mod coll;
mod comm;
mod datatype;
mod dtype;
mod env;
mod error;
mod external;
mod greq;
mod group;
mod info;
mod inter;
mod inter_nb;
mod io;
mod large;
mod later;
mod ldouble;
mod nbc;
mod neighbor;
mod p2p;
mod p2p4;
mod persist;
mod ptr;
mod reduce;
mod request;
mod rma;
mod state;
mod topo;
mod types;
mod userop;
