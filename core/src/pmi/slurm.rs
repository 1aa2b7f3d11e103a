//! Slurm's compressed lists, as its environment carries them.
//!
//! Pure parsers (no I/O, no environment), shared by `dosrun` inside an
//! allocation and by anything else that reads Slurm's variables:
//!
//! * host lists, [`parse_hostlist`] (`SLURM_JOB_NODELIST`,
//!   `SLURM_STEP_NODELIST`): comma-separated host names, each of which may
//!   hold bracket groups of numbers and ranges, `node[01-04,07],gpu5`. A group's numbers keep the
//!   width of the range's first number (`[08-10]` gives `08 09 10`, `[8-10]`
//!   gives `8 9 10`); text may follow a group (`n[1-2]-ib`); several groups
//!   in one name expand as a product, the first group varying slowest
//!   (`r[1-2]n[1-2]` gives `r1n1 r1n2 r2n1 r2n2`), as Slurm's own hostlist
//!   does.
//! * count lists, [`parse_tasks_per_node`] (`SLURM_TASKS_PER_NODE`,
//!   `SLURM_JOB_CPUS_PER_NODE`): comma-separated counts, each optionally
//!   repeated, `2(x3),1` is `2 2 2 1`.
//!
//! Both are bounded: the text is at most [`MAX_TEXT`] bytes and expands to at
//! most [`MAX_HOSTS`] entries, checked before anything that large is
//! allocated (`n[0-999999999]` is refused, not expanded). Malformed input is
//! a [`SlurmListError`] naming the problem and its byte offset; parsing never
//! panics.

use std::fmt;

/// Longest text accepted, in bytes.
pub const MAX_TEXT: usize = 1 << 20;
/// Most hosts (or counts) one list may expand to.
pub const MAX_HOSTS: usize = 1 << 20;
/// Largest number in a range or count (Slurm's node numbers and counts are
/// far below).
pub const MAX_NUMBER: u64 = 1 << 40;
/// Longest host name produced (DNS's limit).
pub const MAX_NAME: usize = 253;

/// Why a Slurm list cannot be used. `at` is a byte offset in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmListError {
    /// The text is empty.
    #[error("empty list")]
    Empty,
    /// The text is longer than [`MAX_TEXT`].
    #[error("longer than {MAX_TEXT} bytes")]
    TooLong,
    /// An element of the list is empty (`a,,b`, a trailing comma).
    #[error("empty element at byte {at}")]
    EmptyElement {
        /// Where.
        at: usize,
    },
    /// A character that has no place there.
    #[error("unexpected {c:?} at byte {at}")]
    Unexpected {
        /// The character.
        c: char,
        /// Where.
        at: usize,
    },
    /// A `[` without its `]`.
    #[error("'[' at byte {at} is not closed")]
    Unclosed {
        /// Where the group opened.
        at: usize,
    },
    /// A number was expected (empty range bound, empty group, `(x)`).
    #[error("a number is missing at byte {at}")]
    MissingNumber {
        /// Where.
        at: usize,
    },
    /// A number above [`MAX_NUMBER`].
    #[error("number at byte {at} is too large")]
    NumberTooLarge {
        /// Where.
        at: usize,
    },
    /// A range whose end is below its start.
    #[error("range {lo}-{hi} at byte {at} goes backwards")]
    Backwards {
        /// Its start.
        lo: u64,
        /// Its end.
        hi: u64,
        /// Where.
        at: usize,
    },
    /// A count or repetition of zero.
    #[error("zero at byte {at} (counts and repetitions are at least 1)")]
    Zero {
        /// Where.
        at: usize,
    },
    /// The text ends in the middle of an element (`2(x3`).
    #[error("the text ends at byte {at} in the middle of an element")]
    Truncated {
        /// Where.
        at: usize,
    },
    /// The list expands to more than [`MAX_HOSTS`] entries.
    #[error("expands to more than {MAX_HOSTS} entries")]
    TooMany,
    /// A host name longer than [`MAX_NAME`].
    #[error("host name at byte {at} is longer than {MAX_NAME} characters")]
    NameTooLong {
        /// Where its element starts.
        at: usize,
    },
}

/// One range of a bracket group: `lo..=hi`, printed `width` digits wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

/// A piece of a host name: text, or a bracket group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Group(Vec<Range>),
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

fn char_at(s: &str, at: usize) -> char {
    s[at..].chars().next().unwrap_or('?')
}

/// Reads a decimal number at `*i`; returns it and its digit count.
fn number(s: &str, i: &mut usize) -> Result<(u64, usize), SlurmListError> {
    let b = s.as_bytes();
    let start = *i;
    let mut v: u64 = 0;
    while *i < b.len() && b[*i].is_ascii_digit() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b[*i] - b'0')))
            .filter(|&v| v <= MAX_NUMBER)
            .ok_or(SlurmListError::NumberTooLarge { at: start })?;
        *i += 1;
    }
    if *i == start {
        return Err(if start == b.len() {
            SlurmListError::Truncated { at: start }
        } else {
            SlurmListError::MissingNumber { at: start }
        });
    }
    Ok((v, *i - start))
}

/// Parses one bracket group starting after its `[` at `*i`; leaves `*i`
/// after the `]`.
fn group(s: &str, i: &mut usize, open: usize) -> Result<Vec<Range>, SlurmListError> {
    let b = s.as_bytes();
    let mut ranges = Vec::new();
    loop {
        if *i >= b.len() {
            return Err(SlurmListError::Unclosed { at: open });
        }
        let at = *i;
        let (lo, width) = number(s, i)?;
        let hi = if b.get(*i) == Some(&b'-') {
            *i += 1;
            number(s, i)?.0
        } else {
            lo
        };
        if hi < lo {
            return Err(SlurmListError::Backwards { lo, hi, at });
        }
        ranges.push(Range { lo, hi, width });
        match b.get(*i) {
            Some(b',') => *i += 1,
            Some(b']') => {
                *i += 1;
                return Ok(ranges);
            }
            None => return Err(SlurmListError::Unclosed { at: open }),
            Some(_) => {
                return Err(SlurmListError::Unexpected {
                    c: char_at(s, *i),
                    at: *i,
                })
            }
        }
    }
}

/// Parses one element (`start..end` of `s`, no top-level comma inside).
fn element(s: &str, start: usize, end: usize) -> Result<Vec<Piece<'_>>, SlurmListError> {
    let b = s.as_bytes();
    let mut pieces = Vec::new();
    let mut i = start;
    while i < end {
        if b[i] == b'[' {
            let open = i;
            i += 1;
            pieces.push(Piece::Group(group(&s[..end], &mut i, open)?));
        } else {
            let t = i;
            while i < end && is_name_char(b[i]) {
                i += 1;
            }
            if i == t {
                return Err(SlurmListError::Unexpected {
                    c: char_at(s, i),
                    at: i,
                });
            }
            pieces.push(Piece::Text(&s[t..i]));
        }
    }
    Ok(pieces)
}

/// How many names an element expands to (saturating), and the longest one.
fn extent(pieces: &[Piece<'_>]) -> (usize, usize) {
    let mut count: usize = 1;
    let mut len = 0usize;
    for p in pieces {
        match p {
            Piece::Text(t) => len = len.saturating_add(t.len()),
            Piece::Group(rs) => {
                let n = rs.iter().fold(0usize, |acc, r| {
                    acc.saturating_add(usize::try_from(r.hi - r.lo).unwrap_or(usize::MAX))
                        .saturating_add(1)
                });
                count = count.saturating_mul(n);
                let w = rs
                    .iter()
                    .map(|r| r.width.max(r.hi.to_string().len()))
                    .max()
                    .unwrap_or(0);
                len = len.saturating_add(w);
            }
        }
    }
    (count, len)
}

/// Appends every name of `pieces[k..]` after `prefix` to `out`.
fn expand(pieces: &[Piece<'_>], prefix: &mut String, out: &mut Vec<String>) {
    let Some((first, rest)) = pieces.split_first() else {
        out.push(prefix.clone());
        return;
    };
    let keep = prefix.len();
    match first {
        Piece::Text(t) => {
            prefix.push_str(t);
            expand(rest, prefix, out);
        }
        Piece::Group(rs) => {
            for r in rs {
                for v in r.lo..=r.hi {
                    use std::fmt::Write as _;
                    let _ = write!(prefix, "{v:0w$}", w = r.width);
                    expand(rest, prefix, out);
                    prefix.truncate(keep);
                }
            }
        }
    }
    prefix.truncate(keep);
}

/// Splits `s` at its top-level commas (not inside brackets); yields each
/// element's byte range.
fn split_top(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                out.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, s.len()));
    out
}

fn check_text(s: &str) -> Result<(), SlurmListError> {
    if s.is_empty() {
        return Err(SlurmListError::Empty);
    }
    if s.len() > MAX_TEXT {
        return Err(SlurmListError::TooLong);
    }
    Ok(())
}

/// Expands a Slurm host list (`node[01-04,07],gpu5`) into its host names,
/// in order (repeated names are kept).
pub fn parse_hostlist(s: &str) -> Result<Vec<String>, SlurmListError> {
    check_text(s)?;
    let mut parsed = Vec::new();
    let mut total = 0usize;
    for (start, end) in split_top(s) {
        if start == end {
            return Err(SlurmListError::EmptyElement { at: start });
        }
        let pieces = element(s, start, end)?;
        let (count, len) = extent(&pieces);
        if len > MAX_NAME {
            return Err(SlurmListError::NameTooLong { at: start });
        }
        total = total.saturating_add(count);
        if total > MAX_HOSTS {
            return Err(SlurmListError::TooMany);
        }
        parsed.push(pieces);
    }
    let mut out = Vec::with_capacity(total);
    let mut prefix = String::new();
    for pieces in &parsed {
        expand(pieces, &mut prefix, &mut out);
    }
    Ok(out)
}

/// Expands a Slurm count list (`2(x3),1`) into one count per node.
pub fn parse_tasks_per_node(s: &str) -> Result<Vec<usize>, SlurmListError> {
    check_text(s)?;
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        if i == b.len() || b[i] == b',' {
            return Err(SlurmListError::EmptyElement { at: i });
        }
        let at = i;
        let (n, _) = number(s, &mut i)?;
        if n == 0 {
            return Err(SlurmListError::Zero { at });
        }
        let mut times = 1u64;
        if b.get(i) == Some(&b'(') {
            if b.get(i + 1) != Some(&b'x') {
                return Err(unexpected_or_end(s, i + 1));
            }
            i += 2;
            let rat = i;
            times = number(s, &mut i)?.0;
            if times == 0 {
                return Err(SlurmListError::Zero { at: rat });
            }
            if b.get(i) != Some(&b')') {
                return Err(unexpected_or_end(s, i));
            }
            i += 1;
        }
        let times = usize::try_from(times).unwrap_or(usize::MAX);
        if out.len().saturating_add(times) > MAX_HOSTS {
            return Err(SlurmListError::TooMany);
        }
        let n = usize::try_from(n).map_err(|_| SlurmListError::NumberTooLarge { at })?;
        out.extend(std::iter::repeat_n(n, times));
        match b.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err(unexpected_or_end(s, i)),
        }
    }
}

fn unexpected_or_end(s: &str, i: usize) -> SlurmListError {
    if i >= s.len() {
        SlurmListError::Truncated { at: i }
    } else {
        SlurmListError::Unexpected {
            c: char_at(s, i),
            at: i,
        }
    }
}

/// Writes counts in Slurm's compressed form (`2(x3),1`); the inverse of
/// [`parse_tasks_per_node`].
pub fn format_tasks_per_node(counts: &[usize]) -> String {
    struct Runs<'a>(&'a [usize]);
    impl fmt::Display for Runs<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut i = 0;
            let mut first = true;
            while i < self.0.len() {
                let v = self.0[i];
                let n = self.0[i..].iter().take_while(|&&x| x == v).count();
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                if n > 1 {
                    write!(f, "{v}(x{n})")?;
                } else {
                    write!(f, "{v}")?;
                }
                i += n;
            }
            Ok(())
        }
    }
    Runs(counts).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hl(s: &str) -> Vec<String> {
        parse_hostlist(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn hostlists_expand() {
        assert_eq!(hl("gpu5"), ["gpu5"]);
        assert_eq!(
            hl("node[01-04,07],gpu5"),
            ["node01", "node02", "node03", "node04", "node07", "gpu5"]
        );
        assert_eq!(hl("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(hl("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(hl("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(hl("n[1-2]-ib"), ["n1-ib", "n2-ib"]);
        assert_eq!(hl("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(hl("[1-2]"), ["1", "2"]);
        assert_eq!(hl("a,b,a"), ["a", "b", "a"]);
        assert_eq!(hl("h[3]"), ["h3"]);
        assert_eq!(hl("x.y_z-1,c[0-1].dom"), ["x.y_z-1", "c0.dom", "c1.dom"]);
        assert_eq!(hl("n[0-1048575]").len(), MAX_HOSTS);
    }

    #[test]
    fn bad_hostlists_are_refused_with_their_reason() {
        use SlurmListError::*;
        let cases: &[(&str, SlurmListError)] = &[
            ("", Empty),
            (",a", EmptyElement { at: 0 }),
            ("a,", EmptyElement { at: 2 }),
            ("a,,b", EmptyElement { at: 2 }),
            ("n[1-3", Unclosed { at: 1 }),
            ("n[1,", Unclosed { at: 1 }),
            ("n[", Unclosed { at: 1 }),
            ("n[]", MissingNumber { at: 2 }),
            ("n[-3]", MissingNumber { at: 2 }),
            ("n[1-]", MissingNumber { at: 4 }),
            ("n[1,,2]", MissingNumber { at: 4 }),
            ("n[1-", Truncated { at: 4 }),
            (
                "n[5-3]",
                Backwards {
                    lo: 5,
                    hi: 3,
                    at: 2,
                },
            ),
            ("n[1x]", Unexpected { c: 'x', at: 3 }),
            ("n[1[2]]", Unexpected { c: '[', at: 3 }),
            ("n]1", Unexpected { c: ']', at: 1 }),
            ("a b", Unexpected { c: ' ', at: 1 }),
            ("n[1-2],é", Unexpected { c: 'é', at: 7 }),
            ("n[99999999999999999999]", NumberTooLarge { at: 2 }),
            ("n[0-1048576]", TooMany),
            ("n[0-999999999]", TooMany),
            ("a[0-9999]b[0-9999]", TooMany),
        ];
        for (s, want) in cases {
            assert_eq!(parse_hostlist(s).as_ref(), Err(want), "{s:?}");
            assert!(!want.to_string().is_empty());
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert_eq!(
            parse_hostlist(&long),
            Err(SlurmListError::NameTooLong { at: 0 })
        );
        assert_eq!(
            parse_hostlist(&"a,".repeat(MAX_TEXT)),
            Err(SlurmListError::TooLong)
        );
    }

    #[test]
    fn tasks_per_node_expand() {
        let t = |s: &str| parse_tasks_per_node(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(t("2(x3),1"), [2, 2, 2, 1]);
        assert_eq!(t("4"), [4]);
        assert_eq!(t("1,2,3"), [1, 2, 3]);
        assert_eq!(t("16(x1)"), [16]);
        assert_eq!(format_tasks_per_node(&[2, 2, 2, 1]), "2(x3),1");
        assert_eq!(format_tasks_per_node(&[]), "");
    }

    #[test]
    fn bad_tasks_per_node_are_refused_with_their_reason() {
        use SlurmListError::*;
        let cases: &[(&str, SlurmListError)] = &[
            ("", Empty),
            (",", EmptyElement { at: 0 }),
            ("1,", EmptyElement { at: 2 }),
            ("0", Zero { at: 0 }),
            ("2(x0)", Zero { at: 3 }),
            ("2(x)", MissingNumber { at: 3 }),
            ("2(x3", Truncated { at: 4 }),
            ("2(3)", Unexpected { c: '3', at: 2 }),
            ("2(", Truncated { at: 2 }),
            ("2x3", Unexpected { c: 'x', at: 1 }),
            ("a", MissingNumber { at: 0 }),
            ("-1", MissingNumber { at: 0 }),
            ("1(x2)3", Unexpected { c: '3', at: 5 }),
            ("1(x1048577)", TooMany),
            ("1(x1048576),1", TooMany),
            ("99999999999999999999", NumberTooLarge { at: 0 }),
        ];
        for (s, want) in cases {
            assert_eq!(parse_tasks_per_node(s).as_ref(), Err(want), "{s:?}");
        }
    }

    /// A model of a host list element: text pieces and groups, with the
    /// expansion written the plain way.
    #[derive(Debug, Clone)]
    enum P {
        T(String),
        G(Vec<(u64, u64, usize)>),
    }

    fn render(el: &[P]) -> String {
        let mut s = String::new();
        for p in el {
            match p {
                P::T(t) => s.push_str(t),
                P::G(rs) => {
                    s.push('[');
                    let parts: Vec<String> = rs
                        .iter()
                        .map(|&(lo, hi, w)| {
                            if lo == hi {
                                format!("{lo:0w$}")
                            } else {
                                format!("{lo:0w$}-{hi}")
                            }
                        })
                        .collect();
                    s.push_str(&parts.join(","));
                    s.push(']');
                }
            }
        }
        s
    }

    fn model(el: &[P]) -> Vec<String> {
        let mut names = vec![String::new()];
        for p in el {
            names = match p {
                P::T(t) => names.into_iter().map(|n| n + t).collect(),
                P::G(rs) => {
                    let mut out = Vec::new();
                    for n in &names {
                        for &(lo, hi, w) in rs {
                            for v in lo..=hi {
                                out.push(format!("{n}{v:0w$}"));
                            }
                        }
                    }
                    out
                }
            }
        }
        names
    }

    fn piece() -> impl Strategy<Value = P> {
        prop_oneof![
            "[a-z][a-z0-9._-]{0,6}".prop_map(P::T),
            proptest::collection::vec((0u64..200, 0u64..5, 1usize..4), 1..4)
                .prop_map(|rs| P::G(rs.into_iter().map(|(lo, d, w)| (lo, lo + d, w)).collect())),
        ]
    }

    proptest! {
        #[test]
        fn hostlist_matches_its_model(els in proptest::collection::vec(
            proptest::collection::vec(piece(), 1..4), 1..5)) {
            let text: Vec<String> = els.iter().map(|e| render(e)).collect();
            let text = text.join(",");
            let want: Vec<String> = els.iter().flat_map(|e| model(e)).collect();
            prop_assert_eq!(parse_hostlist(&text).unwrap(), want);
        }

        #[test]
        fn tasks_per_node_round_trip(v in proptest::collection::vec(1usize..5, 1..40)) {
            let s = format_tasks_per_node(&v);
            prop_assert_eq!(parse_tasks_per_node(&s).unwrap(), v);
        }

        #[test]
        fn random_text_never_panics(s in "[a-c0-9\\[\\]\\-,x()]{0,24}") {
            let _ = parse_hostlist(&s);
            let _ = parse_tasks_per_node(&s);
        }
    }
}
