//! XOR parity across a set of `n` members (L3), sans-IO (SCR's XOR scheme,
//! RAID-5 with the parity spread over the members).
//!
//! Each member's data is padded to the set's longest length and cut into
//! `n - 1` chunks of [`chunk_len`] bytes. Member `j` stores the parity
//! segment `P_j`, the XOR of chunk [`slot`]`(i, j)` of every other member
//! `i`; member `i`'s `n - 1` chunks go to the `n - 1` segments of the others.
//! The parity a member stores is `1 / (n - 1)` of its data.
//!
//! Any single lost member `m` is rebuilt from the others: each survivor `i`
//! sends its [`contribution`] (its chunk for every segment, with its own
//! segment `P_i` in its own place), and the XOR of all contributions is
//! the lost member's chunks and its segment ([`assemble`]).

/// Bytes per chunk for a set of `n >= 2` members whose longest data is `max_len`.
pub fn chunk_len(max_len: usize, n: usize) -> usize {
    max_len.div_ceil(n - 1)
}

/// Which chunk of member `i` goes into parity segment `j` (`i != j`).
pub fn slot(i: usize, j: usize) -> usize {
    if j < i {
        j
    } else {
        j - 1
    }
}

/// Chunk `k` of `data`, cut to at most `c` bytes (shorter, or empty, at the
/// end of `data`: the rest is the zero padding).
fn chunk(data: &[u8], k: usize, c: usize) -> &[u8] {
    let start = (k * c).min(data.len());
    let end = ((k + 1) * c).min(data.len());
    &data[start..end]
}

/// `dst ^= src` (equal lengths). A plain byte-wise loop: LLVM vectorises it
/// to the widest registers the target has.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    for (a, b) in dst.iter_mut().zip(src) {
        *a ^= *b;
    }
}

/// Bytes of `dst` filled per pass of [`xor_of`]: small enough that the
/// destination block stays in the L1 cache while every source is XORed in.
const BLOCK: usize = 16 << 10;

/// `dst` = the XOR of `srcs`, each zero-padded (or cut) to `dst.len()`: the
/// first source is copied, the others XORed in, block by block, so `dst`
/// is written once and never read back from memory.
pub fn xor_of(dst: &mut [u8], srcs: &[&[u8]]) {
    let mut start = 0;
    while start < dst.len() {
        let end = (start + BLOCK).min(dst.len());
        let d = &mut dst[start..end];
        let mut filled = 0;
        for (k, s) in srcs.iter().enumerate() {
            let s = s.get(start..).unwrap_or(&[]);
            let s = &s[..s.len().min(d.len())];
            if k == 0 {
                d[..s.len()].copy_from_slice(s);
                filled = s.len();
            } else {
                // Past `filled`, `d` is still to be zeroed: copy there.
                let x = s.len().min(filled);
                xor_into(&mut d[..x], &s[..x]);
                if s.len() > filled {
                    d[filled..s.len()].copy_from_slice(&s[filled..]);
                    filled = s.len();
                }
            }
        }
        d[filled..].fill(0);
        start = end;
    }
}

/// The chunk of member `i`'s `data` for segment `j`: a slice of `data`
/// when it lies wholly inside, else a zero-padded copy.
pub fn chunk_ref(data: &[u8], i: usize, j: usize, c: usize) -> std::borrow::Cow<'_, [u8]> {
    let start = slot(i, j) * c;
    match data.get(start..start + c) {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(chunk_for(data, i, j, c)),
    }
}

/// The chunk of member `i`'s `data` for segment `j`, padded to `c` bytes.
pub fn chunk_for(data: &[u8], i: usize, j: usize, c: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(c);
    out.extend_from_slice(chunk(data, slot(i, j), c));
    out.resize(c, 0);
    out
}

/// The parity segments of a whole set (what the members compute together;
/// a reference for tests and for a single process).
pub fn encode(data: &[&[u8]]) -> Vec<Vec<u8>> {
    let n = data.len();
    let c = chunk_len(data.iter().map(|d| d.len()).max().unwrap_or(0), n);
    let mut srcs = Vec::with_capacity(n);
    (0..n)
        .map(|j| {
            srcs.clear();
            srcs.extend(
                data.iter()
                    .enumerate()
                    .filter(|&(i, _)| i != j)
                    .map(|(i, d)| chunk(d, slot(i, j), c)),
            );
            let mut p = vec![0u8; c];
            xor_of(&mut p, &srcs);
            p
        })
        .collect()
}

/// What survivor `i` sends to rebuild a lost member: `n` chunks of `c`
/// bytes; its own place holds its parity segment `parity`.
pub fn contribution(i: usize, n: usize, data: &[u8], parity: &[u8], c: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * c);
    contribution_into(&mut out, i, n, data, parity, c);
    out
}

/// [`contribution`], appended to `out` (one pass over the data: each chunk
/// copied once, only the padding zeroed).
pub fn contribution_into(
    out: &mut Vec<u8>,
    i: usize,
    n: usize,
    data: &[u8],
    parity: &[u8],
    c: usize,
) {
    out.reserve(n * c);
    for j in 0..n {
        let piece = if j == i {
            parity
        } else {
            chunk(data, slot(i, j), c)
        };
        let piece = &piece[..piece.len().min(c)];
        out.extend_from_slice(piece);
        out.resize(out.len() + (c - piece.len()), 0);
    }
}

/// From the XOR of all survivors' contributions, the lost member `m`'s data
/// (`len` bytes) and its parity segment.
pub fn assemble(m: usize, n: usize, c: usize, sum: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut data = vec![0u8; (n - 1) * c];
    for j in (0..n).filter(|&j| j != m) {
        let k = slot(m, j);
        data[k * c..(k + 1) * c].copy_from_slice(&sum[j * c..(j + 1) * c]);
    }
    data.truncate(len);
    (data, sum[m * c..(m + 1) * c].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rebuild(data: &[Vec<u8>], parity: &[Vec<u8>], m: usize) -> (Vec<u8>, Vec<u8>) {
        let n = data.len();
        let c = parity[0].len();
        let mut sum = vec![0u8; n * c];
        for i in (0..n).filter(|&i| i != m) {
            xor_into(&mut sum, &contribution(i, n, &data[i], &parity[i], c));
        }
        assemble(m, n, c, &sum, data[m].len())
    }

    proptest! {
        #[test]
        fn any_single_lost_member_is_rebuilt(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 2..10),
            lost in any::<proptest::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let parity = encode(&refs);
            let m = lost.index(data.len());
            let (d, p) = rebuild(&data, &parity, m);
            prop_assert_eq!(&d, &data[m]);
            prop_assert_eq!(&p, &parity[m]);
        }
    }

    proptest! {
        #[test]
        fn xor_of_equals_padded_xors(
            srcs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40_000), 0..5),
            len in 0usize..40_000,
        ) {
            let mut want = vec![0u8; len];
            for s in &srcs {
                for (a, b) in want.iter_mut().zip(s) {
                    *a ^= b;
                }
            }
            let refs: Vec<&[u8]> = srcs.iter().map(Vec::as_slice).collect();
            let mut got = vec![0xa5u8; len];
            xor_of(&mut got, &refs);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn chunk_refs_equal_padded_chunks() {
        let d: Vec<u8> = (0..100).collect();
        for (i, j) in [(0, 1), (0, 2), (2, 0), (2, 1)] {
            assert_eq!(
                &*chunk_ref(&d, i, j, 40),
                chunk_for(&d, i, j, 40).as_slice()
            );
        }
    }

    #[test]
    fn parity_is_a_fraction_of_the_data() {
        let data = vec![vec![7u8; 700]; 8];
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        assert!(encode(&refs).iter().all(|p| p.len() == 100));
    }

    #[test]
    fn a_wrong_segment_does_not_rebuild() {
        let data = vec![vec![1u8; 64], vec![2u8; 64], vec![3u8; 64]];
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = encode(&refs);
        parity[1][0] ^= 0xff;
        assert_ne!(rebuild(&data, &parity, 0).0, data[0]);
    }
}
