//! Checks `dos::io` under a real launcher against a dosfs file system:
//! IOR-like patterns written with the collective and the independent calls,
//! read back with other decompositions, and read again by a later job of
//! another size.
//!
//! ```text
//! cargo build --workspace --bins
//! target/debug/dosfs up --local 3 --target /tmp/t --fs /tmp/t/fs.addr
//! DOSFS=/tmp/t/fs.addr dosrun -n 4 target/debug/iocheck write /run1
//! DOSFS=/tmp/t/fs.addr dosrun -n 3 target/debug/iocheck read /run1
//! target/debug/dosfs --fs /tmp/t/fs.addr down
//! ```
//!
//! `write DIR` makes DIR (64 KiB stripes over every server) and writes, each
//! to its own file, every byte a function of its offset:
//!
//! * `seg`: segmented, rank r's block of 256 KiB in 64 KiB collective
//!   transfers (stripe-aligned: the direct path);
//! * `strided`: 12 KiB transfers interleaved between ranks (aggregated);
//! * `random`: random pieces of up to 9000 bytes dealt to random ranks, each
//!   rank's list shuffled, one `write_at_all_list` (aggregated);
//! * `holes`: a first collective write of the whole region, then random
//!   pieces of which a quarter are written by nobody (data sieving keeps
//!   the holes' bytes);
//! * `indep`: segmented blocks of 100003 bytes written with `write_at`;
//! * `nb`: the same with `iwrite_at`, every transfer in flight at once, and
//!   read back with `iread_at`;
//! * `view`: through a vector view (4-byte etypes, rank r sees every n-th
//!   block of 3000 bytes from block r on), half with `write_at_all` and half
//!   with `write_at` at an offset in etypes, read back through the view with
//!   `read_at_all` (from an odd offset) and `read_at`;
//! * `subarray`: a 40 x 100n array of 8-byte elements, rank r's 100 columns
//!   through a subarray view, one `write_at_all`;
//! * `indexed`: random pieces dealt to ranks, each rank's through an indexed
//!   view, one `write_at_all`, read back through the view with `read_at`
//!   (data sieving);
//! * `nbcoll`: strided transfers with `iwrite_at_all`, four in flight, a
//!   blocking `write_at_all` and a barrier on the file's communicator
//!   meanwhile, completed in reverse order on odd ranks, read back with
//!   `iread_at_all`;
//! * `atomic`: in atomic mode, every rank writes the same 3 stripes + 1000
//!   bytes, each time all of one value, and reads them back: every read
//!   must see one write whole;
//!
//! then syncs and reads every file back with `read_at_all` (contiguous,
//! another split), `read_at_all_list` (random pieces, other owners) and
//! `read_at`, checks typed errors (missing file, exclusive create, access
//! mode), and prints `iocheck: OK write N ranks`. `read DIR` (any number of
//! ranks) checks every file again and prints `iocheck: OK read N ranks`.
//!
//! `bench PATH MIB XFER_KIB [aggregate]` is IOR's segmented pattern as a
//! first measurement: each rank writes MIB MiB in XFER_KIB transfers with
//! `write_at_all`, then the file is synced; rank 0 prints MiB/s.

use std::process::ExitCode;

use dos::io::{Error as IoError, File, Fs, FsErrorKind, Hints, LayoutSpec, Mode, View};
use dos::Comm;

const STRIPE: u32 = 64 << 10;
const SEG_BLOCK: u64 = 256 << 10;
const SEG_XFER: u64 = 64 << 10;
const STRIDE_XFER: u64 = 12 << 10;
const STRIDE_COUNT: u64 = 8;
const RANDOM_PER_RANK: u64 = 150 << 10;
const PIECE_MAX: u64 = 9000;
const INDEP_BLOCK: u64 = 100_003;
const INDEP_XFER: usize = 30_000;
/// Blocks of the `view` file, in 4-byte etypes, and blocks per rank.
const VIEW_BLOCK: u64 = 750;
const VIEW_BLOCKS: u64 = 10;
/// The `subarray` file: rows, and columns per rank, of 8-byte elements.
const SUB_ROWS: u64 = 40;
const SUB_COLS: u64 = 100;
/// Writes of each rank to the `atomic` file.
const ATOMIC_ITERS: u64 = 4;
/// Seeds of the first and the second content.
const S1: u64 = 0x5eed;
const S2: u64 = 0xbeef;

fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(0x94D0_49BB_1331_11EB);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The byte at file offset `x` of content `seed`.
fn content(seed: u64, x: u64) -> u8 {
    (mix(seed, x / 8) >> ((x % 8) * 8)) as u8
}

fn bytes(seed: u64, off: u64, len: u64) -> Vec<u8> {
    (off..off + len).map(|x| content(seed, x)).collect()
}

/// Random pieces covering `0..region`, each with its index.
fn pieces(seed: u64, region: u64) -> Vec<(u64, u64, u64)> {
    let mut v = Vec::new();
    let (mut x, mut i) = (0, 0);
    while x < region {
        let len = (1 + mix(seed, i) % PIECE_MAX).min(region - x);
        v.push((i, x, len));
        x += len;
        i += 1;
    }
    v
}

fn owner(seed: u64, i: u64, n: usize) -> usize {
    (mix(seed ^ 0xab, i) % n as u64) as usize
}

/// Pieces the `holes` file leaves alone.
fn is_hole(i: u64) -> bool {
    mix(0xde, i) % 4 == 0
}

/// Rank `me`'s pieces (dealt with `seed`), shuffled.
fn my_pieces(seed: u64, region: u64, n: usize, me: usize) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<_> = pieces(S1, region)
        .into_iter()
        .filter(|&(i, _, _)| owner(seed, i, n) == me)
        .collect();
    v.sort_by_key(|&(i, _, _)| mix(seed, i));
    v
}

/// The expected byte at `x` of file `name` of size `size`.
fn expected(name: &str, size: u64) -> impl Fn(u64) -> u8 {
    let written: Vec<(u64, u64)> = if name == "holes" {
        pieces(S1, size)
            .into_iter()
            .filter(|&(i, _, _)| !is_hole(i))
            .map(|(_, o, l)| (o, o + l))
            .collect()
    } else {
        Vec::new()
    };
    move |x| {
        let k = written.partition_point(|&(_, e)| e <= x);
        if k < written.len() && written[k].0 <= x {
            content(S2, x)
        } else {
            content(S1, x)
        }
    }
}

fn e(what: &str) -> impl Fn(dos::io::Error) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Opens `path` with aggregation rounds of two stripes, so that collective
/// calls take several rounds.
fn open(comm: &Comm, fs: &Fs, path: &str, mode: Mode) -> Result<File, String> {
    let hints = Hints {
        cb_buffer: 2 * u64::from(STRIPE),
        ..Hints::default()
    };
    File::open_with(comm, fs, path, mode, hints).map_err(e(path))
}

/// Writes every file of `dir`, reads them back, checks the errors.
pub fn write_check(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    let (n, me) = (comm.size(), comm.rank());
    // The directory, with 64 KiB stripes over every server.
    let mut ok = [1u8];
    if me == 0 {
        let c = fs.client();
        let made = c
            .mkdir(dir)
            .map(drop)
            .map_err(IoError::from)
            .or_else(|err| match err.fs_kind() {
                Some(FsErrorKind::Exists) => Ok(()),
                _ => Err(err),
            });
        let spec = LayoutSpec {
            stripe_size: STRIPE,
            stripe_count: LayoutSpec::ALL,
            first: LayoutSpec::ANY,
        };
        if let Err(err) =
            made.and_then(|()| c.set_stripe(dir, spec).map(drop).map_err(IoError::from))
        {
            eprintln!("iocheck: mkdir {dir}: {err}");
            ok[0] = 0;
        }
    }
    comm.bcast(&mut ok, 0).map_err(|x| x.to_string())?;
    if ok[0] == 0 {
        return Err(format!("cannot make {dir}"));
    }
    let path = |name: &str| format!("{dir}/{name}");
    let rw = Mode::READ_WRITE.create();

    // Segmented, collective, stripe-aligned.
    let f = open(comm, fs, &path("seg"), rw)?;
    if f.layout().stripe_size != STRIPE {
        return Err(format!("seg: layout {:?} not inherited", f.layout()));
    }
    for k in 0..SEG_BLOCK / SEG_XFER {
        let off = me as u64 * SEG_BLOCK + k * SEG_XFER;
        f.write_at_all(off, &bytes(S1, off, SEG_XFER))
            .map_err(e("seg write_at_all"))?;
    }
    f.sync().map_err(e("seg sync"))?;
    verify(comm, &f, "seg", n as u64 * SEG_BLOCK)?;

    // Strided, collective, interleaved.
    let f = open(comm, fs, &path("strided"), rw)?;
    for k in 0..STRIDE_COUNT {
        let off = (k * n as u64 + me as u64) * STRIDE_XFER;
        f.write_at_all(off, &bytes(S1, off, STRIDE_XFER))
            .map_err(e("strided write_at_all"))?;
    }
    f.sync().map_err(e("strided sync"))?;
    verify(comm, &f, "strided", n as u64 * STRIDE_COUNT * STRIDE_XFER)?;

    // Random noncontiguous, one collective call.
    let region = n as u64 * RANDOM_PER_RANK;
    let f = open(comm, fs, &path("random"), rw)?;
    let mine = my_pieces(7, region, n, me);
    let data: Vec<Vec<u8>> = mine.iter().map(|&(_, o, l)| bytes(S1, o, l)).collect();
    let list: Vec<(u64, &[u8])> = mine.iter().zip(&data).map(|(p, d)| (p.1, &d[..])).collect();
    f.write_at_all_list(&list)
        .map_err(e("random write_at_all_list"))?;
    f.sync().map_err(e("random sync"))?;
    verify(comm, &f, "random", region)?;

    // Holes: everything, then pieces with holes over it (data sieving).
    let f = open(comm, fs, &path("holes"), rw)?;
    let (lo, hi) = (
        region * me as u64 / n as u64,
        region * (me as u64 + 1) / n as u64,
    );
    f.write_at_all(lo, &bytes(S1, lo, hi - lo))
        .map_err(e("holes first write_at_all"))?;
    let mine: Vec<_> = my_pieces(9, region, n, me)
        .into_iter()
        .filter(|&(i, _, _)| !is_hole(i))
        .collect();
    let data: Vec<Vec<u8>> = mine.iter().map(|&(_, o, l)| bytes(S2, o, l)).collect();
    let list: Vec<(u64, &[u8])> = mine.iter().zip(&data).map(|(p, d)| (p.1, &d[..])).collect();
    f.write_at_all_list(&list)
        .map_err(e("holes write_at_all_list"))?;
    f.sync().map_err(e("holes sync"))?;
    verify(comm, &f, "holes", region)?;

    // Independent.
    let f = open(comm, fs, &path("indep"), rw)?;
    let block = bytes(S1, me as u64 * INDEP_BLOCK, INDEP_BLOCK);
    for (k, chunk) in block.chunks(INDEP_XFER).enumerate() {
        let off = me as u64 * INDEP_BLOCK + (k * INDEP_XFER) as u64;
        f.write_at(off, chunk).map_err(e("indep write_at"))?;
    }
    f.sync().map_err(e("indep sync"))?;
    verify(comm, &f, "indep", n as u64 * INDEP_BLOCK)?;
    f.close().map_err(e("close"))?;

    // Nonblocking: every chunk of the block in flight at once.
    let f = open(comm, fs, &path("nb"), rw)?;
    let base = me as u64 * INDEP_BLOCK;
    let written: Result<Vec<usize>, dos::io::Error> = dos::scope(|s| {
        let reqs = block
            .chunks(INDEP_XFER)
            .enumerate()
            .map(|(k, chunk)| f.iwrite_at(s, base + (k * INDEP_XFER) as u64, chunk))
            .collect::<Result<Vec<_>, _>>()?;
        reqs.into_iter().map(|r| r.wait()).collect()
    });
    let written: usize = written.map_err(e("nb iwrite_at"))?.into_iter().sum();
    if written != block.len() {
        return Err(format!("nb: wrote {written} of {} bytes", block.len()));
    }
    f.sync().map_err(e("nb sync"))?;
    verify(comm, &f, "nb", n as u64 * INDEP_BLOCK)?;
    let mut back = vec![0u8; block.len()];
    let got = dos::scope(|s| f.iread_at(s, base, &mut back)?.wait()).map_err(e("nb iread_at"))?;
    if got != block.len() || back != block {
        return Err(format!("nb: iread_at gave {got} bytes, or other bytes"));
    }

    views(comm, fs, dir)?;
    nbcoll(comm, fs, dir)?;
    atomic(comm, fs, dir)?;
    errors(comm, fs, dir)
}

/// The content `S1` of the bytes a view selects: `len` bytes from the
/// start of `view` at `disp`.
fn view_bytes(view: &View, disp: u64, len: u64) -> Result<Vec<u8>, String> {
    let ranges = view.map(disp, 0, len).map_err(|x| x.to_string())?;
    Ok(ranges
        .into_iter()
        .flat_map(|(o, l)| bytes(S1, o, l))
        .collect())
}

/// `local`, agreed: every rank fails if one does.
fn agreed(comm: &Comm, what: &str, local: Result<(), String>) -> Result<(), String> {
    let mut any = [0u64];
    comm.allreduce(&[u64::from(local.is_err())], &mut any, dos::op::Max)
        .map_err(|x| x.to_string())?;
    match local {
        Ok(()) if any[0] != 0 => Err(format!("{what}: another rank failed")),
        r => r,
    }
}

fn same(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None if got.len() == want.len() => Ok(()),
        None => Err(format!(
            "{what}: {} bytes, expected {}",
            got.len(),
            want.len()
        )),
        Some(i) => Err(format!(
            "{what}: byte {i} is {:#x}, expected {:#x}",
            got[i], want[i]
        )),
    }
}

/// The `view`, `subarray` and `indexed` files.
fn views(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    let (n, me) = (comm.size() as u64, comm.rank() as u64);
    let rw = Mode::READ_WRITE.create();
    let ve = |x: dos::io::ViewError| format!("view: {x}");

    // A vector view: blocks r, r + n, r + 2n, ... of 3000 bytes.
    let f = open(comm, fs, &format!("{dir}/view"), rw)?;
    let bl = VIEW_BLOCK * 4;
    let v = View::vector(4, VIEW_BLOCKS, VIEW_BLOCK, n * VIEW_BLOCK).map_err(ve)?;
    let (disp, len) = (me * bl, VIEW_BLOCKS * bl);
    let stream = view_bytes(&v, disp, len)?;
    f.set_view(disp, v).map_err(e("view set_view"))?;
    let half = (len / 2) as usize;
    f.write_at_all(0, &stream[..half])
        .map_err(e("view write_at_all"))?;
    f.write_at(half as u64 / 4, &stream[half..])
        .map_err(e("view write_at"))?;
    f.sync().map_err(e("view sync"))?;
    let mut back = vec![0u8; stream.len() - 28];
    let got = f.read_at_all(7, &mut back).map_err(e("view read_at_all"))?;
    let mut local = if got == back.len() {
        same("view read_at_all", &back, &stream[28..])
    } else {
        Err(format!("view read_at_all: {got} of {} bytes", back.len()))
    };
    let mut back = vec![0u8; stream.len()];
    let got = f.read_at(0, &mut back).map_err(e("view read_at"))?;
    local = local.and_then(|()| {
        if got != back.len() {
            return Err(format!("view read_at: {got} of {} bytes", back.len()));
        }
        same("view read_at", &back, &stream)
    });
    agreed(comm, "view", local)?;
    f.set_view(0, View::default()).map_err(e("view set_view"))?;
    verify(comm, &f, "view", n * len)?;

    // A subarray view: this rank's columns of a row-major array.
    let f = open(comm, fs, &format!("{dir}/subarray"), rw)?;
    let v = View::subarray(
        8,
        &[SUB_ROWS, n * SUB_COLS],
        &[SUB_ROWS, SUB_COLS],
        &[0, me * SUB_COLS],
    )
    .map_err(ve)?;
    let stream = view_bytes(&v, 0, v.size())?;
    f.set_view(0, v).map_err(e("subarray set_view"))?;
    f.write_at_all(0, &stream)
        .map_err(e("subarray write_at_all"))?;
    f.sync().map_err(e("subarray sync"))?;
    f.set_view(0, View::default())
        .map_err(e("subarray set_view"))?;
    verify(comm, &f, "subarray", SUB_ROWS * n * SUB_COLS * 8)?;

    // An indexed view: random pieces, sorted by offset.
    let region = n * RANDOM_PER_RANK;
    let f = open(comm, fs, &format!("{dir}/indexed"), rw)?;
    let mut mine: Vec<(u64, u64)> = my_pieces(13, region, n as usize, me as usize)
        .into_iter()
        .map(|(_, o, l)| (o, l))
        .collect();
    mine.sort_unstable();
    let v = if mine.is_empty() {
        View::default()
    } else {
        View::indexed(1, &mine).map_err(ve)?
    };
    let size: u64 = mine.iter().map(|p| p.1).sum();
    let stream = view_bytes(&v, 0, size)?;
    f.set_view(0, v).map_err(e("indexed set_view"))?;
    f.write_at_all(0, &stream)
        .map_err(e("indexed write_at_all"))?;
    f.sync().map_err(e("indexed sync"))?;
    let mut back = vec![0u8; stream.len()];
    let got = f.read_at(0, &mut back).map_err(e("indexed read_at"))?;
    let local = if got == back.len() {
        same("indexed read_at", &back, &stream)
    } else {
        Err(format!("indexed read_at: {got} of {} bytes", back.len()))
    };
    agreed(comm, "indexed", local)?;
    f.set_view(0, View::default())
        .map_err(e("indexed set_view"))?;
    verify(comm, &f, "indexed", region)
}

/// The `nbcoll` file: nonblocking collective writes and reads.
fn nbcoll(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    let (n, me) = (comm.size() as u64, comm.rank() as u64);
    let f = open(
        comm,
        fs,
        &format!("{dir}/nbcoll"),
        Mode::READ_WRITE.create(),
    )?;
    let off = |k: u64| (k * n + me) * STRIDE_XFER;
    let res: Result<usize, dos::io::Error> = dos::scope(|s| {
        let mut reqs = (0..STRIDE_COUNT / 2)
            .map(|k| f.iwrite_at_all(s, off(k), &bytes(S1, off(k), STRIDE_XFER)))
            .collect::<Result<Vec<_>, _>>()?;
        // A blocking collective transfer and a barrier on the file's
        // communicator while they are in flight.
        for k in STRIDE_COUNT / 2..STRIDE_COUNT {
            f.write_at_all(off(k), &bytes(S1, off(k), STRIDE_XFER))?;
        }
        f.comm().barrier()?;
        if me % 2 == 1 {
            reqs.reverse();
        }
        let last = reqs.pop();
        let mut total = 0;
        for r in reqs {
            total += r.wait()?;
        }
        if let Some(r) = last {
            while !r.test() {}
            total += r.wait()?;
        }
        Ok(total)
    });
    let written = res.map_err(e("nbcoll iwrite_at_all"))?;
    if written as u64 != STRIDE_COUNT / 2 * STRIDE_XFER {
        return Err(format!("nbcoll: iwrite_at_all wrote {written} bytes"));
    }
    f.sync().map_err(e("nbcoll sync"))?;
    let size = n * STRIDE_COUNT * STRIDE_XFER;
    verify(comm, &f, "nbcoll", size)?;
    // Read back with another split, two requests.
    let (lo, hi) = (size * me / n, size * (me + 1) / n);
    let mid = (lo + hi) / 2;
    let mut a = vec![0u8; (mid - lo) as usize];
    let mut b = vec![0u8; (hi - mid) as usize];
    let got = dos::scope(|s| {
        let ra = f.iread_at_all(s, lo, &mut a)?;
        let rb = f.iread_at_all(s, mid, &mut b)?;
        Ok::<_, dos::io::Error>(rb.wait()? + ra.wait()?)
    })
    .map_err(e("nbcoll iread_at_all"))?;
    let local = if got as u64 == hi - lo {
        same("nbcoll iread_at_all", &a, &bytes(S1, lo, mid - lo))
            .and_then(|()| same("nbcoll iread_at_all", &b, &bytes(S1, mid, hi - mid)))
    } else {
        Err(format!("nbcoll iread_at_all: {got} of {} bytes", hi - lo))
    };
    agreed(comm, "nbcoll", local)
}

/// The `atomic` file: overlapping writes by every rank in atomic mode.
fn atomic(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    let me = comm.rank() as u64;
    let f = open(
        comm,
        fs,
        &format!("{dir}/atomic"),
        Mode::READ_WRITE.create(),
    )?;
    f.set_atomicity(true).map_err(e("set_atomicity"))?;
    if !f.atomicity() {
        return Err("atomic: atomicity() is false after set_atomicity(true)".into());
    }
    let region = 3 * u64::from(STRIPE) + 1000;
    let mut local = Ok(());
    let mut back = vec![0u8; region as usize];
    for it in 0..ATOMIC_ITERS {
        let tag = (me * ATOMIC_ITERS + it + 1) as u8;
        f.write_at(0, &vec![tag; region as usize])
            .map_err(e("atomic write_at"))?;
        f.read_at(0, &mut back).map_err(e("atomic read_at"))?;
        if let Some(i) = back.iter().position(|&b| b != back[0]) {
            local = local.and(Err(format!(
                "atomic: a read saw {:#x} at 0 and {:#x} at {i}: two writes mixed",
                back[0], back[i]
            )));
        }
    }
    agreed(comm, "atomic", local)?;
    f.set_atomicity(false).map_err(e("set_atomicity"))?;
    f.sync().map_err(e("atomic sync"))?;
    let got = f.read_at(0, &mut back).map_err(e("atomic read_at"))?;
    let local = match back.iter().position(|&b| b != back[0]) {
        _ if got != back.len() => Err(format!("atomic: read {got} bytes")),
        Some(i) => Err(format!("atomic: the file mixes writes (byte {i})")),
        None => Ok(()),
    };
    agreed(comm, "atomic", local)
}

/// The typed errors of open and of the access modes, the same on every rank.
fn errors(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    let kind = |r: dos::io::Result<File>| r.err().and_then(|x| x.fs_kind());
    let missing = File::open_with(
        comm,
        fs,
        &format!("{dir}/nope"),
        Mode::READ_ONLY,
        Hints::default(),
    );
    if kind(missing) != Some(FsErrorKind::NotFound) {
        return Err("opening a missing file is not NotFound".into());
    }
    let again = File::open_with(
        comm,
        fs,
        &format!("{dir}/seg"),
        Mode::READ_WRITE.exclusive(),
        Hints::default(),
    );
    if kind(again) != Some(FsErrorKind::Exists) {
        return Err("an exclusive create of an existing file is not Exists".into());
    }
    if !matches!(
        File::open_with(
            comm,
            fs,
            &format!("{dir}/x"),
            Mode::READ_ONLY.create(),
            Hints::default()
        ),
        Err(dos::io::Error::InvalidArgument { .. })
    ) {
        return Err("creating a read-only file is not InvalidArgument".into());
    }
    let ro = open(comm, fs, &format!("{dir}/seg"), Mode::READ_ONLY)?;
    let access = |r: dos::io::Result<()>| matches!(r, Err(dos::io::Error::Access { .. }));
    if !access(ro.write_at(0, b"x")) || !access(ro.write_at_all(0, b"x")) {
        return Err("a write to a read-only file is not an Access error".into());
    }
    let wo = open(comm, fs, &format!("{dir}/seg"), Mode::WRITE_ONLY)?;
    if !matches!(wo.read_at(0, &mut [0]), Err(dos::io::Error::Access { .. })) {
        return Err("a read of a write-only file is not an Access error".into());
    }
    Ok(())
}

/// [`verify_here`], agreed: every rank fails if one does (so that no rank
/// waits in the next collective for one that gave up).
fn verify(comm: &Comm, f: &File, name: &str, size: u64) -> Result<(), String> {
    let local = verify_here(comm, f, name, size);
    let mut any = [0u64];
    comm.allreduce(&[u64::from(local.is_err())], &mut any, dos::op::Max)
        .map_err(|x| x.to_string())?;
    match local {
        Ok(()) if any[0] != 0 => Err(format!("{name}: another rank found a mismatch")),
        r => r,
    }
}

/// Reads `name` back three ways and compares with its content (this rank's view).
fn verify_here(comm: &Comm, f: &File, name: &str, size: u64) -> Result<(), String> {
    let (n, me) = (comm.size() as u64, comm.rank() as u64);
    let got_size = f.size().map_err(e("size"))?;
    if got_size != size {
        return Err(format!("{name}: size {got_size}, expected {size}"));
    }
    let want = expected(name, size);
    let check = |what: &str, off: u64, buf: &[u8]| -> Result<(), String> {
        match buf
            .iter()
            .enumerate()
            .find(|&(i, &b)| b != want(off + i as u64))
        {
            None => Ok(()),
            Some((i, b)) => Err(format!(
                "{name}: {what}: byte {} is {b:#x}, expected {:#x}",
                off + i as u64,
                want(off + i as u64)
            )),
        }
    };
    // Contiguous, an uneven split.
    let (lo, hi) = (size * me / n, size * (me + 1) / n);
    let mut buf = vec![0u8; (hi - lo) as usize];
    let got = f.read_at_all(lo, &mut buf).map_err(e("read_at_all"))?;
    // Mismatches are kept until every collective call of the check is made.
    let mut first = if got != buf.len() {
        Err(format!(
            "{name}: read_at_all gave {got} of {} bytes",
            buf.len()
        ))
    } else {
        check("read_at_all", lo, &buf)
    };
    // Random pieces, other owners, one call.
    let mine = my_pieces(11, size, n as usize, me as usize);
    let mut bufs: Vec<Vec<u8>> = mine
        .iter()
        .map(|&(_, _, l)| vec![0u8; l as usize])
        .collect();
    let mut list: Vec<(u64, &mut [u8])> = mine
        .iter()
        .zip(bufs.iter_mut())
        .map(|(p, b)| (p.1, &mut b[..]))
        .collect();
    f.read_at_all_list(&mut list)
        .map_err(e("read_at_all_list"))?;
    for (p, b) in mine.iter().zip(&bufs) {
        first = first.and_then(|()| check("read_at_all_list", p.1, b));
    }
    first?;
    // Independent, across the end of the file.
    let off = size.saturating_sub(1000 + me * 7);
    let mut buf = vec![0u8; 5000];
    let got = f.read_at(off, &mut buf).map_err(e("read_at"))?;
    if got as u64 != size - off {
        return Err(format!("{name}: read_at at {off} gave {got} bytes"));
    }
    check("read_at", off, &buf[..got])
}

/// Reads every file of `dir` as a later job of any size.
pub fn read_check(comm: &Comm, fs: &Fs, dir: &str) -> Result<(), String> {
    for name in [
        "seg", "strided", "random", "holes", "indep", "nb", "view", "subarray", "indexed", "nbcoll",
    ] {
        let f = open(comm, fs, &format!("{dir}/{name}"), Mode::READ_ONLY)?;
        let size = f.size().map_err(e("size"))?;
        if size == 0 {
            return Err(format!("{name}: empty"));
        }
        verify(comm, &f, name, size)?;
    }
    Ok(())
}

/// `bench PATH MIB XFER_KIB [aggregate]`: IOR-shaped, segmented: each rank
/// writes its block of MIB MiB in XFER_KIB transfers with `write_at_all`,
/// then syncs; rank 0 prints the bandwidth (from a barrier before the first
/// write to the end of the sync). `aggregate` turns the direct path off.
pub fn bench(comm: &Comm, fs: &Fs, args: &[String]) -> Result<(), String> {
    let usage = || "usage: iocheck bench PATH MIB XFER_KIB [aggregate]".to_string();
    let (path, mib, xfer, aggregate) = match args {
        [p, m, x, rest @ ..] => (
            p.as_str(),
            m.parse::<u64>().map_err(|_| usage())?,
            x.parse::<u64>().map_err(|_| usage())? << 10,
            rest.first().is_some_and(|a| a == "aggregate"),
        ),
        _ => return Err(usage()),
    };
    if xfer == 0 || (mib << 20) % xfer != 0 {
        return Err(usage());
    }
    let (n, me) = (comm.size() as u64, comm.rank() as u64);
    let hints = Hints {
        direct: !aggregate,
        ..Hints::default()
    };
    let f = File::open_with(comm, fs, path, Mode::WRITE_ONLY.create(), hints).map_err(e(path))?;
    let block = mib << 20;
    let data = bytes(S1, 0, xfer);
    comm.barrier().map_err(|x| x.to_string())?;
    let t0 = std::time::Instant::now();
    for k in 0..block / xfer {
        f.write_at_all(me * block + k * xfer, &data)
            .map_err(e("bench write_at_all"))?;
    }
    let written = t0.elapsed().as_secs_f64();
    f.sync().map_err(e("bench sync"))?;
    let secs = t0.elapsed().as_secs_f64();
    if me == 0 {
        let total = (n * block) as f64 / (1 << 20) as f64;
        println!(
            "iocheck: bench {n} ranks x {mib} MiB, {} KiB transfers, {}: {:.0} MiB/s ({total:.0} MiB in {secs:.3} s, of which sync {:.3} s)",
            xfer >> 10,
            if aggregate { "aggregated" } else { "direct allowed" },
            total / secs,
            secs - written
        );
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = match args.as_slice() {
        [_, m, d, ..] if m == "write" || m == "read" || m == "bench" => (m.clone(), d.clone()),
        _ => {
            eprintln!(
                "usage: iocheck write|read DIR, or iocheck bench PATH MIB XFER_KIB [aggregate] (the file system from $DOSFS)"
            );
            return ExitCode::from(2);
        }
    };
    let w = match dos::init() {
        Ok(w) => w,
        Err(err) => {
            eprintln!("iocheck: {err}");
            return ExitCode::FAILURE;
        }
    };
    let res = Fs::from_env()
        .map_err(|err| format!("no file system: {err}"))
        .and_then(|fs| match mode.as_str() {
            "write" => write_check(&w, &fs, &dir),
            "read" => read_check(&w, &fs, &dir),
            _ => bench(&w, &fs, &args[2..]),
        });
    match res {
        Ok(()) => {
            if w.rank() == 0 && mode != "bench" {
                println!("iocheck: OK {mode} {} ranks", w.size());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("iocheck: rank {}: MISMATCH {err}", w.rank());
            ExitCode::FAILURE
        }
    }
}
