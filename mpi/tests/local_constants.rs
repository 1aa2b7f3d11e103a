//! Every MPI value that a module of the library keeps as its own constant
//! (`const ERR_SIZE: c_int = 52;`) equals the value `mpi.h` gives the same
//! name (`MPI_ERR_SIZE`).
//!
//! `header_check` (a unit test of `abi.rs`) holds `mpi.h` and `abi.rs`
//! together; this holds the modules' private copies to the header too. When
//! the constants were renumbered to the standard ABI's values, a private
//! `ERR_SIZE` of 55 (the draft's value) was left behind in `env.rs`, and
//! `MPI_Alloc_mem(-1)` returned `MPI_ERR_UNSUPPORTED_OPERATION`.

use std::fs;
use std::path::Path;

/// `NAME = VALUE` or `#define NAME VALUE` for `MPI_<name>` in the header.
fn header_value(header: &str, name: &str) -> Option<i64> {
    let full = format!("MPI_{name}");
    for line in header.lines() {
        for part in line.split([',', '{', '}', ';']) {
            let part = part.trim();
            let rest = part.strip_prefix("#define ").map(str::trim).unwrap_or(part);
            let Some(after) = rest.strip_prefix(&full) else {
                continue;
            };
            let after = after.trim_start();
            let value = after.strip_prefix('=').unwrap_or(after).trim();
            let value = value.trim_matches(|c| c == '(' || c == ')');
            if !after.starts_with('=') && !part.starts_with("#define") {
                continue;
            }
            if let Some(v) = parse(value) {
                return Some(v);
            }
        }
    }
    None
}

fn parse(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Some(h) = v.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(n) = v.strip_prefix('-') {
        parse(n).map(|x| -x)
    } else {
        v.parse().ok()
    }
}

#[test]
fn private_constants_match_the_header() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = fs::read_to_string(dir.join("include/mpi.h")).expect("mpi.h");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(dir.join("src")).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("abi.rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("source");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("const ")
                .or_else(|| line.strip_prefix("pub(crate) const "))
            else {
                continue;
            };
            let Some((name, rest)) = rest.split_once(": c_int = ") else {
                continue;
            };
            let Some(value) = rest.strip_suffix(';').and_then(parse) else {
                continue;
            };
            let Some(expected) = header_value(&header, name) else {
                continue;
            };
            checked += 1;
            if expected != value {
                wrong.push(format!(
                    "{}:{}: {name} = {value}, mpi.h has MPI_{name} = {expected}",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    // The copies shrink as values move into abi.rs (session 10 moved the
    // error classes); this floor only catches a pattern that no longer matches.
    assert!(
        checked >= 12,
        "only {checked} private constants found: is the pattern stale?"
    );
    assert!(
        wrong.is_empty(),
        "private constants differ from mpi.h:\n{}",
        wrong.join("\n")
    );
}
