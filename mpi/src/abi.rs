//! Handle values, constants and the status layout of the MPI-5 standard ABI,
//! as `mpi/include/mpi.h` declares them for C.
//!
//! Handles cross the C interface as pointer-sized integers (`usize` here, a
//! pointer to an incomplete struct in C: the same bits on every platform dos
//! supports). Predefined handles are small values; handles the library makes
//! (communicators, requests) start at [`FIRST_DYNAMIC`], far above them.

use std::ffi::c_int;

/// A handle as it crosses the C interface.
pub type Handle = usize;

/// Operations (`MPI_Op`).
pub mod op {
    pub const NULL: usize = 0x020;
    pub const SUM: usize = 0x021;
    pub const MIN: usize = 0x022;
    pub const MAX: usize = 0x023;
    pub const PROD: usize = 0x024;
    pub const BAND: usize = 0x028;
    pub const BOR: usize = 0x029;
    pub const BXOR: usize = 0x02a;
    pub const LAND: usize = 0x030;
    pub const LOR: usize = 0x031;
    pub const LXOR: usize = 0x032;
    pub const MINLOC: usize = 0x038;
    pub const MAXLOC: usize = 0x039;
    pub const REPLACE: usize = 0x03c;
    pub const NO_OP: usize = 0x03d;
}

pub const COMM_NULL: usize = 0x100;
pub const COMM_WORLD: usize = 0x101;
pub const COMM_SELF: usize = 0x102;
pub const GROUP_NULL: usize = 0x108;
pub const GROUP_EMPTY: usize = 0x109;
pub const INFO_NULL: usize = 0x130;
pub const INFO_ENV: usize = 0x131;
pub const ERRHANDLER_NULL: usize = 0x140;
pub const ERRORS_ARE_FATAL: usize = 0x141;
pub const ERRORS_RETURN: usize = 0x143;
pub const ERRORS_ABORT: usize = 0x142;
pub const REQUEST_NULL: usize = 0x180;
pub const DATATYPE_NULL: usize = 0x200;

/// The first handle value the library gives to an object it makes.
pub const FIRST_DYNAMIC: usize = 0x1_0000;

/// `MPI_IN_PLACE`.
pub const IN_PLACE: usize = 1;

// Error classes.
pub const SUCCESS: c_int = 0;
pub const ERR_BUFFER: c_int = 1;
pub const ERR_COUNT: c_int = 2;
pub const ERR_TYPE: c_int = 3;
pub const ERR_TAG: c_int = 4;
pub const ERR_COMM: c_int = 5;
pub const ERR_RANK: c_int = 6;
pub const ERR_REQUEST: c_int = 7;
pub const ERR_ROOT: c_int = 8;
pub const ERR_GROUP: c_int = 9;
pub const ERR_OP: c_int = 10;
pub const ERR_TOPOLOGY: c_int = 11;
pub const ERR_DIMS: c_int = 12;
pub const ERR_ARG: c_int = 13;
pub const ERR_UNKNOWN: c_int = 14;
pub const ERR_TRUNCATE: c_int = 15;
pub const ERR_OTHER: c_int = 16;
pub const ERR_INTERN: c_int = 17;
pub const ERR_PENDING: c_int = 18;
pub const ERR_IN_STATUS: c_int = 19;
pub const ERR_INFO_KEY: c_int = 31;
pub const ERR_INFO_NOKEY: c_int = 32;
pub const ERR_INFO_VALUE: c_int = 33;
pub const ERR_INFO: c_int = 34;
// Error classes of windows and files (rma.rs, io.rs).
pub const ERR_ACCESS: c_int = 20;
pub const ERR_AMODE: c_int = 21;
pub const ERR_ASSERT: c_int = 22;
pub const ERR_BAD_FILE: c_int = 23;
pub const ERR_DISP: c_int = 26;
pub const ERR_FILE_EXISTS: c_int = 28;
pub const ERR_FILE: c_int = 30;
pub const ERR_IO: c_int = 35;
pub const ERR_LOCKTYPE: c_int = 37;
pub const ERR_NOT_SAME: c_int = 40;
pub const ERR_NO_SPACE: c_int = 41;
pub const ERR_NO_SUCH_FILE: c_int = 42;
pub const ERR_RMA_ATTACH: c_int = 46;
pub const ERR_RMA_RANGE: c_int = 48;
pub const ERR_RMA_SHARED: c_int = 49;
pub const ERR_RMA_SYNC: c_int = 50;
pub const ERR_UNSUPPORTED_DATAREP: c_int = 54;
pub const ERR_WIN: c_int = 56;
pub const ERR_RMA_FLAVOR: c_int = 57;
pub const ERR_KEYVAL: c_int = 36;
pub const ERR_NO_MEM: c_int = 39;
pub const ERR_SIZE: c_int = 52;
pub const ERR_PROC_ABORTED: c_int = 58;
pub const ERR_UNSUPPORTED_OPERATION: c_int = 55;
pub const ERR_ERRHANDLER: c_int = 61;
pub const ERR_LASTCODE: c_int = 0x3fff;

// Sentinels.
pub const ANY_SOURCE: c_int = -1;
pub const PROC_NULL: c_int = -3;
pub const ROOT: c_int = -4;
pub const ANY_TAG: c_int = -2;
pub const UNDEFINED: c_int = -32766;
pub const KEYVAL_INVALID: c_int = 0;

// Thread levels.
pub const THREAD_SINGLE: c_int = 0;
pub const THREAD_FUNNELED: c_int = 1024;
pub const THREAD_SERIALIZED: c_int = 2048;
pub const THREAD_MULTIPLE: c_int = 4096;

/// The thread level dos provides for a `required` one: `MPI_THREAD_FUNNELED`
/// for any request of it or more (the standard ABI's levels increase with
/// their values), else `MPI_THREAD_SINGLE`.
pub fn provided_thread_level(required: c_int) -> c_int {
    if required >= THREAD_FUNNELED {
        THREAD_FUNNELED
    } else {
        THREAD_SINGLE
    }
}

// Comparisons.
pub const IDENT: c_int = 201;
pub const CONGRUENT: c_int = 202;
pub const SIMILAR: c_int = 203;
pub const UNEQUAL: c_int = 204;

// Split types.
pub const COMM_TYPE_SHARED: c_int = 221;
pub const COMM_TYPE_HW_UNGUIDED: c_int = 222;
pub const COMM_TYPE_HW_GUIDED: c_int = 223;
pub const COMM_TYPE_RESOURCE_GUIDED: c_int = 224;

// Attribute keys of MPI_COMM_WORLD.
pub const TAG_UB: c_int = 501;
pub const IO: c_int = 502;
pub const HOST: c_int = 503;
pub const WTIME_IS_GLOBAL: c_int = 504;
pub const APPNUM: c_int = 505;
pub const LASTUSEDCODE: c_int = 506;
pub const UNIVERSE_SIZE: c_int = 507;

// Topology kinds (`MPI_Topo_test`).
pub const CART: c_int = 211;
pub const GRAPH: c_int = 212;
pub const DIST_GRAPH: c_int = 213;
/// `MPI_UNWEIGHTED` and `MPI_WEIGHTS_EMPTY` (pointer values).
pub const UNWEIGHTED: usize = 10;
pub const WEIGHTS_EMPTY: usize = 11;

/// String lengths.
pub const MAX_ERROR_STRING: usize = 512;
pub const MAX_LIBRARY_VERSION_STRING: usize = 8192;
pub const MAX_PROCESSOR_NAME: usize = 256;
pub const MAX_OBJECT_NAME: usize = 128;

/// The largest tag (`MPI_TAG_UB`): dos takes every non-negative `i32`.
pub const TAG_UB_VALUE: c_int = i32::MAX;

/// `MPI_Status`: three public fields, then five ints private to the
/// library. dos keeps the received length in bytes in the first two
/// (`MPI_Get_count` divides it by the type size) and the cancelled flag in
/// the third.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Status {
    pub MPI_SOURCE: c_int,
    pub MPI_TAG: c_int,
    pub MPI_ERROR: c_int,
    pub private: [c_int; 5],
}

impl Status {
    /// A status with these fields and `bytes` received.
    pub fn new(source: c_int, tag: c_int, error: c_int, bytes: u64) -> Status {
        Status {
            MPI_SOURCE: source,
            MPI_TAG: tag,
            MPI_ERROR: error,
            private: [
                bytes as u32 as c_int,
                (bytes >> 32) as u32 as c_int,
                0,
                0,
                0,
            ],
        }
    }

    /// The empty status of the standard (source `MPI_ANY_SOURCE`, tag
    /// `MPI_ANY_TAG`, no data): what a send or an inactive request yields.
    pub fn empty() -> Status {
        Status::new(ANY_SOURCE, ANY_TAG, SUCCESS, 0)
    }

    /// What a receive from `MPI_PROC_NULL` yields.
    pub fn proc_null() -> Status {
        Status::new(PROC_NULL, ANY_TAG, SUCCESS, 0)
    }

    /// Bytes received.
    pub fn bytes(&self) -> u64 {
        (self.private[0] as u32 as u64) | ((self.private[1] as u32 as u64) << 32)
    }

    /// True if the request was cancelled.
    pub fn cancelled(&self) -> bool {
        self.private[2] != 0
    }
}

const _: () = assert!(std::mem::size_of::<Status>() == 8 * std::mem::size_of::<c_int>());

#[cfg(test)]
mod tests {
    use super::*;

    /// dos answers any level from `MPI_THREAD_FUNNELED` up with it, and
    /// anything below (or a value that is no level) with `MPI_THREAD_SINGLE`:
    /// never a value that is not a level.
    #[test]
    fn provided_thread_level_is_always_a_level() {
        assert_eq!(provided_thread_level(THREAD_SINGLE), THREAD_SINGLE);
        assert_eq!(provided_thread_level(THREAD_FUNNELED), THREAD_FUNNELED);
        assert_eq!(provided_thread_level(THREAD_SERIALIZED), THREAD_FUNNELED);
        assert_eq!(provided_thread_level(THREAD_MULTIPLE), THREAD_FUNNELED);
        // The draft's values of the levels: not levels of the standard ABI.
        assert_eq!(provided_thread_level(1), THREAD_SINGLE);
        assert_eq!(provided_thread_level(7), THREAD_SINGLE);
        assert_eq!(provided_thread_level(-5), THREAD_SINGLE);
    }
}

/// The header check: every constant of `mpi/include/mpi.h`, as a C compiler
/// sees it after the whole header (so a `#define` after an enum member of
/// the same name, which silently changes its value, is caught), against the
/// header's own text and against the library's values.
#[cfg(test)]
mod header_check {
    use std::collections::BTreeMap;
    use std::process::Command;

    const HEADER: &str = include_str!("../include/mpi.h");

    /// A constant's textual value, as far as the text says one.
    #[derive(Debug, Clone, PartialEq)]
    enum Text {
        Value(i64),
        Alias(String),
        Other,
    }

    fn int(v: &str) -> Option<i64> {
        let v = v.trim();
        let (neg, v) = match v.strip_prefix('-') {
            Some(r) => (true, r.trim()),
            None => (false, v),
        };
        let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(h) => i64::from_str_radix(h, 16).ok()?,
            None => v.parse().ok()?,
        };
        Some(if neg { -n } else { n })
    }

    fn is_const_name(n: &str) -> bool {
        (n.starts_with("MPI_") || n.starts_with("MPIX_"))
            && n.len() > 4
            && n.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    }

    /// Every constant of the header: `#define NAME value` (not function-like)
    /// and the members of every `enum { ... }`, each with how often it is
    /// defined.
    fn header_constants() -> (BTreeMap<String, Text>, BTreeMap<String, usize>) {
        constants_of(HEADER)
    }

    /// The constants of any header text, as [`header_constants`] reads them.
    fn constants_of(header: &str) -> (BTreeMap<String, Text>, BTreeMap<String, usize>) {
        let mut text = BTreeMap::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        // Comments out, lines joined for the enums.
        let mut clean = String::new();
        let mut rest = header;
        while let Some(i) = rest.find("/*") {
            clean.push_str(&rest[..i]);
            rest = rest[i..].split_once("*/").map_or("", |x| x.1);
        }
        clean.push_str(rest);
        for line in clean.lines() {
            let Some(d) = line.trim_start().strip_prefix("#define ") else {
                continue;
            };
            let name: String = d
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = &d[name.len()..];
            if !is_const_name(&name) || after.starts_with('(') {
                continue;
            }
            let v = after.trim();
            let t = if let Some(n) = int(v) {
                Text::Value(n)
            } else if let Some(h) = v
                .strip_prefix("((")
                .and_then(|x| x.split_once(")0x"))
                .and_then(|(_, h)| h.strip_suffix(')'))
            {
                i64::from_str_radix(h, 16).map_or(Text::Other, Text::Value)
            } else if is_const_name(v) {
                Text::Alias(v.to_string())
            } else {
                Text::Other
            };
            *seen.entry(name.clone()).or_default() += 1;
            text.insert(name, t);
        }
        let mut r = clean.as_str();
        while let Some(i) = r.find("enum") {
            r = &r[i + 4..];
            let body = r.trim_start();
            let Some(body) = body.strip_prefix('{') else {
                continue;
            };
            let Some((body, after)) = body.split_once('}') else {
                break;
            };
            r = after;
            for m in body.split(',') {
                let Some((n, v)) = m.split_once('=') else {
                    continue;
                };
                let n = n.trim().to_string();
                if !is_const_name(&n) {
                    continue;
                }
                let t = int(v).map_or_else(
                    || {
                        let v = v.trim();
                        if is_const_name(v) {
                            Text::Alias(v.to_string())
                        } else {
                            Text::Other
                        }
                    },
                    Text::Value,
                );
                *seen.entry(n.clone()).or_default() += 1;
                text.insert(n, t);
            }
        }
        (text, seen)
    }

    /// Each name's value as the C compiler sees it after the whole header
    /// (a pointer's bits as an integer).
    fn compiled(names: &[&String]) -> BTreeMap<String, i64> {
        compiled_with(names, "<mpi.h>", "mpi")
    }

    /// As [`compiled`], with `include` (`<mpi.h>` or a quoted path) as the
    /// header; `tag` names the scratch directory.
    fn compiled_with(names: &[&String], include: &str, tag: &str) -> BTreeMap<String, i64> {
        let dir = std::env::temp_dir().join(format!("dos-mpi-abi-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = format!(
            "#include {include}\n#include <stdio.h>\n#include <stdint.h>\nint main(void) {{\n"
        );
        for n in names {
            c.push_str(&format!(
                "    printf(\"%s %lld\\n\", \"{n}\", (long long)(intptr_t)({n}));\n"
            ));
        }
        c.push_str("    return 0;\n}\n");
        let src = dir.join("consts.c");
        let exe = dir.join("consts");
        std::fs::write(&src, c).unwrap();
        let inc = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let o = Command::new(&cc)
            .args(["-std=c99", "-Wall", "-Werror", "-I", inc, "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("{cc}: {e}"));
        assert!(
            o.status.success(),
            "the constants program does not compile:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (n, v) = l.split_once(' ').unwrap();
                (n.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    /// The library's value of every constant it has, by C name.
    fn library() -> Vec<(&'static str, i64)> {
        use super::*;
        use crate::types::{combiner, ORDER_C, ORDER_FORTRAN};
        let u = |v: usize| v as i64;
        let i = |v: std::ffi::c_int| v as i64;
        vec![
            ("MPI_OP_NULL", u(op::NULL)),
            ("MPI_SUM", u(op::SUM)),
            ("MPI_MIN", u(op::MIN)),
            ("MPI_MAX", u(op::MAX)),
            ("MPI_PROD", u(op::PROD)),
            ("MPI_BAND", u(op::BAND)),
            ("MPI_BOR", u(op::BOR)),
            ("MPI_BXOR", u(op::BXOR)),
            ("MPI_LAND", u(op::LAND)),
            ("MPI_LOR", u(op::LOR)),
            ("MPI_LXOR", u(op::LXOR)),
            ("MPI_MINLOC", u(op::MINLOC)),
            ("MPI_MAXLOC", u(op::MAXLOC)),
            ("MPI_REPLACE", u(op::REPLACE)),
            ("MPI_NO_OP", u(op::NO_OP)),
            ("MPI_COMM_NULL", u(COMM_NULL)),
            ("MPI_COMM_WORLD", u(COMM_WORLD)),
            ("MPI_COMM_SELF", u(COMM_SELF)),
            ("MPI_GROUP_NULL", u(GROUP_NULL)),
            ("MPI_GROUP_EMPTY", u(GROUP_EMPTY)),
            ("MPI_INFO_NULL", u(INFO_NULL)),
            ("MPI_INFO_ENV", u(INFO_ENV)),
            ("MPI_ERRHANDLER_NULL", u(ERRHANDLER_NULL)),
            ("MPI_ERRORS_ARE_FATAL", u(ERRORS_ARE_FATAL)),
            ("MPI_ERRORS_RETURN", u(ERRORS_RETURN)),
            ("MPI_ERRORS_ABORT", u(ERRORS_ABORT)),
            ("MPI_REQUEST_NULL", u(REQUEST_NULL)),
            ("MPI_DATATYPE_NULL", u(DATATYPE_NULL)),
            ("MPI_WIN_NULL", u(crate::rma::WIN_NULL)),
            ("MPI_FILE_NULL", u(crate::io::FILE_NULL)),
            ("MPI_IN_PLACE", u(IN_PLACE)),
            ("MPI_SUCCESS", i(SUCCESS)),
            ("MPI_ERR_BUFFER", i(ERR_BUFFER)),
            ("MPI_ERR_COUNT", i(ERR_COUNT)),
            ("MPI_ERR_TYPE", i(ERR_TYPE)),
            ("MPI_ERR_TAG", i(ERR_TAG)),
            ("MPI_ERR_COMM", i(ERR_COMM)),
            ("MPI_ERR_RANK", i(ERR_RANK)),
            ("MPI_ERR_REQUEST", i(ERR_REQUEST)),
            ("MPI_ERR_ROOT", i(ERR_ROOT)),
            ("MPI_ERR_GROUP", i(ERR_GROUP)),
            ("MPI_ERR_OP", i(ERR_OP)),
            ("MPI_ERR_TOPOLOGY", i(ERR_TOPOLOGY)),
            ("MPI_ERR_DIMS", i(ERR_DIMS)),
            ("MPI_ERR_ARG", i(ERR_ARG)),
            ("MPI_ERR_UNKNOWN", i(ERR_UNKNOWN)),
            ("MPI_ERR_TRUNCATE", i(ERR_TRUNCATE)),
            ("MPI_ERR_OTHER", i(ERR_OTHER)),
            ("MPI_ERR_INTERN", i(ERR_INTERN)),
            ("MPI_ERR_PENDING", i(ERR_PENDING)),
            ("MPI_ERR_IN_STATUS", i(ERR_IN_STATUS)),
            ("MPI_ERR_INFO_KEY", i(ERR_INFO_KEY)),
            ("MPI_ERR_INFO_NOKEY", i(ERR_INFO_NOKEY)),
            ("MPI_ERR_INFO_VALUE", i(ERR_INFO_VALUE)),
            ("MPI_ERR_INFO", i(ERR_INFO)),
            ("MPI_ERR_ACCESS", i(ERR_ACCESS)),
            ("MPI_ERR_AMODE", i(ERR_AMODE)),
            ("MPI_ERR_ASSERT", i(ERR_ASSERT)),
            ("MPI_ERR_BAD_FILE", i(ERR_BAD_FILE)),
            ("MPI_ERR_DISP", i(ERR_DISP)),
            ("MPI_ERR_FILE_EXISTS", i(ERR_FILE_EXISTS)),
            ("MPI_ERR_FILE", i(ERR_FILE)),
            ("MPI_ERR_IO", i(ERR_IO)),
            ("MPI_ERR_LOCKTYPE", i(ERR_LOCKTYPE)),
            ("MPI_ERR_NOT_SAME", i(ERR_NOT_SAME)),
            ("MPI_ERR_NO_SPACE", i(ERR_NO_SPACE)),
            ("MPI_ERR_NO_SUCH_FILE", i(ERR_NO_SUCH_FILE)),
            ("MPI_ERR_RMA_ATTACH", i(ERR_RMA_ATTACH)),
            ("MPI_ERR_RMA_RANGE", i(ERR_RMA_RANGE)),
            ("MPI_ERR_RMA_SHARED", i(ERR_RMA_SHARED)),
            ("MPI_ERR_RMA_SYNC", i(ERR_RMA_SYNC)),
            ("MPI_ERR_UNSUPPORTED_DATAREP", i(ERR_UNSUPPORTED_DATAREP)),
            ("MPI_ERR_WIN", i(ERR_WIN)),
            ("MPI_ERR_RMA_FLAVOR", i(ERR_RMA_FLAVOR)),
            ("MPI_ERR_KEYVAL", i(ERR_KEYVAL)),
            ("MPI_ERR_NO_MEM", i(ERR_NO_MEM)),
            ("MPI_ERR_SIZE", i(ERR_SIZE)),
            ("MPI_ERR_PROC_ABORTED", i(ERR_PROC_ABORTED)),
            (
                "MPI_ERR_UNSUPPORTED_OPERATION",
                i(ERR_UNSUPPORTED_OPERATION),
            ),
            ("MPI_ERR_ERRHANDLER", i(ERR_ERRHANDLER)),
            ("MPI_ERR_LASTCODE", i(ERR_LASTCODE)),
            ("MPI_ANY_SOURCE", i(ANY_SOURCE)),
            ("MPI_PROC_NULL", i(PROC_NULL)),
            ("MPI_ROOT", i(ROOT)),
            ("MPI_ANY_TAG", i(ANY_TAG)),
            ("MPI_UNDEFINED", i(UNDEFINED)),
            ("MPI_KEYVAL_INVALID", i(KEYVAL_INVALID)),
            ("MPI_THREAD_SINGLE", i(THREAD_SINGLE)),
            ("MPI_THREAD_FUNNELED", i(THREAD_FUNNELED)),
            ("MPI_THREAD_SERIALIZED", i(THREAD_SERIALIZED)),
            ("MPI_THREAD_MULTIPLE", i(THREAD_MULTIPLE)),
            ("MPI_IDENT", i(IDENT)),
            ("MPI_CONGRUENT", i(CONGRUENT)),
            ("MPI_SIMILAR", i(SIMILAR)),
            ("MPI_UNEQUAL", i(UNEQUAL)),
            ("MPI_COMM_TYPE_SHARED", i(COMM_TYPE_SHARED)),
            ("MPI_COMM_TYPE_HW_UNGUIDED", i(COMM_TYPE_HW_UNGUIDED)),
            ("MPI_COMM_TYPE_HW_GUIDED", i(COMM_TYPE_HW_GUIDED)),
            (
                "MPI_COMM_TYPE_RESOURCE_GUIDED",
                i(COMM_TYPE_RESOURCE_GUIDED),
            ),
            ("MPI_TAG_UB", i(TAG_UB)),
            ("MPI_IO", i(IO)),
            ("MPI_HOST", i(HOST)),
            ("MPI_WTIME_IS_GLOBAL", i(WTIME_IS_GLOBAL)),
            ("MPI_APPNUM", i(APPNUM)),
            ("MPI_LASTUSEDCODE", i(LASTUSEDCODE)),
            ("MPI_UNIVERSE_SIZE", i(UNIVERSE_SIZE)),
            ("MPI_CART", i(CART)),
            ("MPI_GRAPH", i(GRAPH)),
            ("MPI_DIST_GRAPH", i(DIST_GRAPH)),
            ("MPI_UNWEIGHTED", u(UNWEIGHTED)),
            ("MPI_WEIGHTS_EMPTY", u(WEIGHTS_EMPTY)),
            ("MPI_MAX_ERROR_STRING", u(MAX_ERROR_STRING)),
            (
                "MPI_MAX_LIBRARY_VERSION_STRING",
                u(MAX_LIBRARY_VERSION_STRING),
            ),
            ("MPI_MAX_PROCESSOR_NAME", u(MAX_PROCESSOR_NAME)),
            ("MPI_MAX_OBJECT_NAME", u(MAX_OBJECT_NAME)),
            ("MPI_LOCK_SHARED", i(crate::rma::LOCK_SHARED)),
            ("MPI_LOCK_EXCLUSIVE", i(crate::rma::LOCK_EXCLUSIVE)),
            ("MPI_ORDER_C", i(ORDER_C)),
            ("MPI_ORDER_FORTRAN", i(ORDER_FORTRAN)),
            ("MPI_DISTRIBUTE_NONE", i(crate::types::DISTRIBUTE_NONE)),
            ("MPI_DISTRIBUTE_BLOCK", i(crate::types::DISTRIBUTE_BLOCK)),
            ("MPI_DISTRIBUTE_CYCLIC", i(crate::types::DISTRIBUTE_CYCLIC)),
            (
                "MPI_DISTRIBUTE_DFLT_DARG",
                i(crate::types::DISTRIBUTE_DFLT_DARG),
            ),
            ("MPI_TYPECLASS_INTEGER", i(crate::types::TYPECLASS_INTEGER)),
            ("MPI_TYPECLASS_REAL", i(crate::types::TYPECLASS_REAL)),
            ("MPI_TYPECLASS_COMPLEX", i(crate::types::TYPECLASS_COMPLEX)),
            ("MPI_COMBINER_DARRAY", i(combiner::DARRAY)),
            ("MPI_COMBINER_F90_REAL", i(combiner::F90_REAL)),
            ("MPI_COMBINER_F90_COMPLEX", i(combiner::F90_COMPLEX)),
            ("MPI_COMBINER_F90_INTEGER", i(combiner::F90_INTEGER)),
            ("MPI_COMBINER_NAMED", i(combiner::NAMED)),
            ("MPI_COMBINER_DUP", i(combiner::DUP)),
            ("MPI_COMBINER_CONTIGUOUS", i(combiner::CONTIGUOUS)),
            ("MPI_COMBINER_VECTOR", i(combiner::VECTOR)),
            ("MPI_COMBINER_HVECTOR", i(combiner::HVECTOR)),
            ("MPI_COMBINER_INDEXED", i(combiner::INDEXED)),
            ("MPI_COMBINER_HINDEXED", i(combiner::HINDEXED)),
            ("MPI_COMBINER_INDEXED_BLOCK", i(combiner::INDEXED_BLOCK)),
            ("MPI_COMBINER_HINDEXED_BLOCK", i(combiner::HINDEXED_BLOCK)),
            ("MPI_COMBINER_STRUCT", i(combiner::STRUCT)),
            ("MPI_COMBINER_SUBARRAY", i(combiner::SUBARRAY)),
            ("MPI_COMBINER_RESIZED", i(combiner::RESIZED)),
        ]
    }

    /// The whole check; one test so that the C program is built once.
    #[test]
    fn every_header_constant_compiles_to_its_text_and_the_librarys_value() {
        let (text, seen) = header_constants();
        assert!(text.len() > 250, "only {} constants found", text.len());
        // 1. Defined once: a second definition (a `#define` after an enum
        //    member, or two `#define`s) is the hazard this check exists for.
        let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
        assert!(
            twice.is_empty(),
            "defined more than once in mpi.h: {twice:?}"
        );
        // 2. What the compiler sees is what the text says.
        let names: Vec<&String> = text.keys().collect();
        let got = compiled(&names);
        assert_eq!(got.len(), text.len(), "the program printed every constant");
        let resolve = |n: &str| -> Option<i64> {
            let mut n = n.to_string();
            for _ in 0..4 {
                match text.get(&n)? {
                    Text::Value(v) => return Some(*v),
                    Text::Alias(a) => n = a.clone(),
                    Text::Other => return None,
                }
            }
            None
        };
        let mut bad = Vec::new();
        for n in &names {
            if let Some(v) = resolve(n) {
                if got[*n] != v {
                    bad.push(format!("{n}: text {v}, compiled {}", got[*n]));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "mpi.h disagrees with itself:\n{}",
            bad.join("\n")
        );
        // 3. The library's values.
        for (n, v) in library() {
            let g = got.get(n).unwrap_or_else(|| panic!("{n} is not in mpi.h"));
            assert_eq!(*g, v, "{n}: mpi.h {g:#x}, the library {v:#x}");
        }
        // Every predefined datatype: the library knows the handle by that
        // name (aliases by their target's), and the error classes' strings
        // start with their names.
        let mut types = 0;
        for n in &names {
            let v = got[*n];
            let is_type = HEADER.contains(&format!("#define {n} "))
                && {
                    let line = HEADER
                        .lines()
                        .find(|l| l.starts_with(&format!("#define {n} ")))
                        .unwrap_or("");
                    line.contains("(MPI_Datatype)")
                        || matches!(text.get(*n), Some(Text::Alias(a)) if HEADER.contains(&format!("#define {a} ")) && HEADER.lines().any(|l| l.starts_with(&format!("#define {a} ")) && l.contains("(MPI_Datatype)")))
                };
            if is_type && n.as_str() != "MPI_DATATYPE_NULL" {
                let p = crate::datatype::predefined(v as usize)
                    .unwrap_or_else(|| panic!("{n} = {v:#x} is unknown to the library"));
                let target = match text.get(*n) {
                    Some(Text::Alias(a)) => a.as_str(),
                    _ => n.as_str(),
                };
                let synonym = matches!(text.get(p.name), Some(Text::Alias(a)) if a == target);
                assert!(
                    p.name == target || synonym,
                    "{n} = {v:#x} is named {}",
                    p.name
                );
                types += 1;
            }
            if n.starts_with("MPI_ERR_") && n.as_str() != "MPI_ERR_LASTCODE" {
                let s = crate::error::class_string(v as std::ffi::c_int)
                    .unwrap_or_else(|| panic!("{n} = {v} has no string"));
                assert!(s.starts_with(&format!("{n}:")), "{n} = {v}: {s}");
            }
        }
        assert!(types > 60, "{types} datatypes");
    }
    /// Every constant `mpi.h` shares with the standard ABI's own header has
    /// the ABI's value, both as compiled. Runs when `MPI_ABI_H` names that
    /// header (MPICH 4.3+: `src/binding/abi/mpi_abi.h`), e.g.
    /// `MPI_ABI_H=/path/to/mpi_abi.h cargo test -p dos-mpi --lib header_check`;
    /// without it the test says so and passes.
    #[test]
    fn every_shared_constant_has_the_standard_abi_value() {
        let Some(path) = std::env::var_os("MPI_ABI_H") else {
            eprintln!("MPI_ABI_H is not set: the comparison with mpi_abi.h is skipped");
            return;
        };
        let path = std::path::PathBuf::from(path);
        let abi_text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("MPI_ABI_H={}: {e}", path.display()));
        let (ours, _) = header_constants();
        let (theirs, _) = constants_of(&abi_text);
        let shared: Vec<&String> = ours.keys().filter(|n| theirs.contains_key(*n)).collect();
        assert!(
            shared.len() > 250,
            "only {} names shared with {}: not the standard ABI header?",
            shared.len(),
            path.display()
        );
        // Own scratch directories: the other test compiles at the same time.
        let a = compiled_with(&shared, "<mpi.h>", "ours");
        let b = compiled_with(&shared, &format!("\"{}\"", path.display()), "std");
        let bad: Vec<String> = shared
            .iter()
            .filter(|n| a[**n] != b[**n])
            .map(|n| format!("{n}: mpi.h {}, mpi_abi.h {}", a[*n], b[*n]))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} shared constants differ from {}:\n{}",
            bad.len(),
            shared.len(),
            path.display(),
            bad.join("\n")
        );
        let missing: Vec<&String> = ours.keys().filter(|n| !theirs.contains_key(*n)).collect();
        eprintln!(
            "{} constants equal to mpi_abi.h; only in mpi.h: {missing:?}",
            shared.len()
        );
    }
}
