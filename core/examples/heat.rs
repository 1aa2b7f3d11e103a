//! The 2-D heat equation on a square grid, decomposed by rows across ranks.
//!
//! Shows a domain decomposition with halo exchange: each rank owns a block of
//! rows and, before every step, swaps its edge rows with its neighbours using
//! `sendrecv` (the first and last ranks have one neighbour only). Results
//! are collected with `gatherv`.
//!
//! ```text
//! cargo build --release --examples --bins
//! dosrun -n 4 target/release/examples/heat [--size N] [--steps T] [--check]
//! ```
//!
//! The grid has N×N cells (default 128) and takes T explicit steps (default
//! 200) of the 5-point stencil `u' = u + a·((n + s) + (w + e) − 4u)` with
//! a = 0.2. The edge cells are fixed (the top edge at 1, the left at 0.5, the
//! others at 0) and a hot square sits in the middle at the start. Rank 0
//! prints
//!
//! ```text
//! heat: N x N grid, T steps on R ranks: sum S probe(N/2,N/2) P
//! ```
//!
//! where S sums each row left to right and then the row sums top to bottom.
//! Every cell is computed with the same operations in the same order whatever
//! the number of ranks, so S and P are bit-for-bit the same on any number of
//! ranks. With `--check`, rank 0 also runs the whole computation serially,
//! compares every cell bit for bit with the gathered parallel grid, and
//! prints `heat: OK`, or `heat: MISMATCH ...` and ends with a non-zero status.

use std::error::Error;
use std::process::ExitCode;

/// Diffusion number; the explicit scheme is stable up to 0.25.
const ALPHA: f64 = 0.2;
/// Tag of rows moving to the rank above.
const TAG_UP: dos::Tag = 1;
/// Tag of rows moving to the rank below.
const TAG_DOWN: dos::Tag = 2;
/// Tag of the probe value sent to rank 0.
const TAG_PROBE: dos::Tag = 3;

const USAGE: &str = "usage: heat [--size N] [--steps T] [--check]";

#[derive(Debug, Clone, Copy)]
struct Args {
    n: usize,
    steps: u64,
    check: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        n: 128,
        steps: 200,
        check: false,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => a.n = number(&arg, it.next())?,
            "--steps" => a.steps = number(&arg, it.next())?,
            "--check" => a.check = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    if a.n < 3 {
        return Err(format!("--size must be at least 3, not {}", a.n));
    }
    Ok(a)
}

fn number<T: std::str::FromStr>(opt: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value\n{USAGE}"))?;
    v.parse()
        .map_err(|_| format!("{opt}: {v:?} is not a whole number\n{USAGE}"))
}

/// Initial value of global cell (`i`, `j`) of an `n`×`n` grid.
fn initial(i: usize, j: usize, n: usize) -> f64 {
    let hot = n / 4..n - n / 4;
    if i == 0 {
        1.0
    } else if j == 0 {
        0.5
    } else if i == n - 1 || j == n - 1 {
        0.0
    } else if hot.contains(&i) && hot.contains(&j) {
        2.0
    } else {
        0.0
    }
}

/// First global row of rank `r`'s block when `n` rows are split over `size` ranks.
fn first_row(r: usize, n: usize, size: usize) -> usize {
    r * n / size
}

/// A block of rows with one ghost row above and one below.
struct Block {
    /// Grid size (cells per row and rows in the whole grid).
    n: usize,
    /// Global index of the first owned row.
    lo: usize,
    /// Number of owned rows.
    rows: usize,
    /// `(rows + 2) * n` cells: ghost row, owned rows, ghost row.
    u: Vec<f64>,
    /// The next step, same layout.
    next: Vec<f64>,
}

impl Block {
    fn new(n: usize, lo: usize, rows: usize) -> Block {
        let mut u = vec![0.0; (rows + 2) * n];
        for k in 0..rows {
            for j in 0..n {
                u[(k + 1) * n + j] = initial(lo + k, j, n);
            }
        }
        let next = u.clone();
        Block {
            n,
            lo,
            rows,
            u,
            next,
        }
    }

    /// The owned rows, without ghosts.
    fn owned(&self) -> &[f64] {
        &self.u[self.n..(self.rows + 1) * self.n]
    }

    /// One explicit step from the owned rows and the ghost rows.
    ///
    /// Edge rows and columns of the global grid keep their values, so the
    /// ghost rows beyond the grid are never read.
    fn step(&mut self) {
        let n = self.n;
        for k in 1..=self.rows {
            let g = self.lo + k - 1;
            let row = k * n;
            if g == 0 || g == n - 1 {
                self.next[row..row + n].copy_from_slice(&self.u[row..row + n]);
                continue;
            }
            let u = &self.u;
            let out = &mut self.next[row..row + n];
            out[0] = u[row];
            out[n - 1] = u[row + n - 1];
            for j in 1..n - 1 {
                let c = u[row + j];
                let (up, down) = (u[row - n + j], u[row + n + j]);
                let (left, right) = (u[row + j - 1], u[row + j + 1]);
                out[j] = c + ALPHA * (((up + down) + (left + right)) - 4.0 * c);
            }
        }
        std::mem::swap(&mut self.u, &mut self.next);
    }

    /// Swaps edge rows with the neighbouring ranks: the first owned row goes
    /// up and the row below arrives in the bottom ghost, then the last owned
    /// row goes down and the row above arrives in the top ghost.
    fn exchange(&mut self, comm: &dos::Comm) -> dos::Result<()> {
        let (rank, size, n, rows) = (comm.rank(), comm.size(), self.n, self.rows);
        let up = rank.checked_sub(1);
        let down = (rank + 1 < size).then_some(rank + 1);

        // [top ghost | owned rows | bottom ghost]
        let (top, rest) = self.u.split_at_mut(n);
        let (owned, bottom) = rest.split_at_mut(rows * n);
        let first = &owned[..n];
        match (up, down) {
            (Some(u), Some(d)) => drop(comm.sendrecv(first, u, TAG_UP, bottom, d, TAG_UP)?),
            (Some(u), None) => comm.send(first, u, TAG_UP)?,
            (None, Some(d)) => drop(comm.recv(bottom, d, TAG_UP)?),
            (None, None) => {}
        }
        let last = &owned[(rows - 1) * n..];
        match (up, down) {
            (Some(u), Some(d)) => drop(comm.sendrecv(last, d, TAG_DOWN, top, u, TAG_DOWN)?),
            (None, Some(d)) => comm.send(last, d, TAG_DOWN)?,
            (Some(u), None) => drop(comm.recv(top, u, TAG_DOWN)?),
            (None, None) => {}
        }
        Ok(())
    }
}

/// Sum of each row left to right, in row order.
fn row_sums(cells: &[f64], n: usize) -> Vec<f64> {
    cells.chunks(n).map(|r| r.iter().sum()).collect()
}

/// The checksum: the row sums added top to bottom.
fn checksum(sums: &[f64]) -> f64 {
    sums.iter().sum()
}

/// The whole computation on one block holding every row.
fn serial(n: usize, steps: u64) -> Vec<f64> {
    let mut b = Block::new(n, 0, n);
    for _ in 0..steps {
        b.step();
    }
    b.owned().to_vec()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let a = parse_args(std::env::args().skip(1))?;
    let world = dos::init()?;
    let (rank, size, n) = (world.rank(), world.size(), a.n);
    if n < size {
        return Err(format!("a grid of {n} rows cannot give each of {size} ranks a row").into());
    }

    let lo = first_row(rank, n, size);
    let rows = first_row(rank + 1, n, size) - lo;
    let mut b = Block::new(n, lo, rows);
    for _ in 0..a.steps {
        b.exchange(&world)?;
        b.step();
    }

    // Rank 0 collects the row sums (and, to check, every cell).
    let rows_of: Vec<usize> = (0..size)
        .map(|r| first_row(r + 1, n, size) - first_row(r, n, size))
        .collect();
    let first_of: Vec<usize> = (0..size).map(|r| first_row(r, n, size)).collect();
    let root = rank == 0;
    let mut sums = vec![0.0; if root { n } else { 0 }];
    world.gatherv(&row_sums(b.owned(), n), &mut sums, &rows_of, &first_of, 0)?;

    // The owner of the probe cell sends it to rank 0.
    let (pi, pj) = (n / 2, n / 2);
    let owner = (0..size)
        .find(|&r| first_row(r + 1, n, size) > pi)
        .expect("every row has an owner");
    let mut probe = [0.0f64];
    if rank == owner {
        probe[0] = b.owned()[(pi - lo) * n + pj];
        if !root {
            world.send(&probe, 0, TAG_PROBE)?;
        }
    } else if root {
        world.recv(&mut probe, owner, TAG_PROBE)?;
    }

    let mut failed = None;
    if root {
        println!(
            "heat: {n} x {n} grid, {} steps on {size} ranks: sum {} probe({pi},{pj}) {}",
            a.steps,
            checksum(&sums),
            probe[0]
        );
    }
    if a.check {
        let cells_of: Vec<usize> = rows_of.iter().map(|r| r * n).collect();
        let cell_displs: Vec<usize> = first_of.iter().map(|r| r * n).collect();
        let mut grid = vec![0.0; if root { n * n } else { 0 }];
        world.gatherv(b.owned(), &mut grid, &cells_of, &cell_displs, 0)?;
        if root {
            let reference = serial(n, a.steps);
            failed = compare(&grid, &reference, n);
            match &failed {
                None => println!("heat: OK"),
                Some(why) => println!("heat: MISMATCH {why}"),
            }
        }
    }
    world.finalize()?;
    match failed {
        None => Ok(()),
        Some(why) => Err(why.into()),
    }
}

/// Describes the first cell where `got` and `want` differ in any bit.
fn compare(got: &[f64], want: &[f64], n: usize) -> Option<String> {
    let sum_got = checksum(&row_sums(got, n));
    let sum_want = checksum(&row_sums(want, n));
    if let Some(k) = (0..want.len()).find(|&k| got[k].to_bits() != want[k].to_bits()) {
        return Some(format!(
            "at cell ({}, {}): parallel {} serial {} (sums {sum_got} and {sum_want})",
            k / n,
            k % n,
            got[k],
            want[k]
        ));
    }
    if sum_got.to_bits() != sum_want.to_bits() {
        return Some(format!("sums {sum_got} and {sum_want}"));
    }
    None
}
