//! Starting a node's ranks from several threads at once, so that their
//! execs overlap.
//!
//! A [`Spawner::spawn`] sleeps until its child has exec'd (`CLONE_VFORK`):
//! from one thread, the kernel's part of one rank's `execve` never overlaps
//! the next rank's clone, set-up and exec, and on a machine of few cores a
//! core idles while the other execs. [`spawn_all`] lets the calling thread
//! and up to `threads - 1` helper threads take the ranks in turn (the next
//! rank not yet taken), each with a [`ChildStack`] of its own, and gives the
//! outcomes back in local-rank order, as one thread would have had them.
//!
//! The helper threads are made on first use and live as long as dosrun:
//! a rank's parent-death signal fires when the *thread* that started it
//! ends, so a thread that started ranks must not end before they do. They
//! block every signal for their whole life and wait for work otherwise.
//!
//! A rank that cannot start stops the others: no thread takes a rank after
//! a failure is seen, and the ranks after the failed one that another
//! thread had already started are killed (`SIGKILL` to their group) and
//! reaped before [`spawn_all`] returns, so that the outcome is the one of
//! a single thread: the ranks before the failure started, the failed one,
//! and the rest not started, with no process left over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::bind::CpuMask;
use crate::plan::Placement;
use crate::spawn::{BlockedSignals, ChildStack, SpawnError, Spawned, Spawner};
use crate::sys;

/// One rank to start.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it runs.
    pub placement: Placement,
    /// It reads dosrun's stdin (else `/dev/null`).
    pub stdin: bool,
    /// The CPUs it is bound to.
    pub affinity: Option<CpuMask>,
}

/// What became of a node's requests, in their order.
#[derive(Debug)]
pub struct Outcome {
    /// The ranks started, one for each request before the failed one (all
    /// of them without a failure).
    pub started: Vec<Spawned>,
    /// The first request that could not start (its index) and why; the
    /// requests after it were not started, or were stopped and reaped.
    pub failed: Option<(usize, SpawnError)>,
}

/// The number of threads to start a node's ranks from when the user did
/// not say (`DOS_SPAWN_THREADS=auto`): one per CPU dosrun may run on, none
/// besides the caller's below [`PARALLEL_FROM`] ranks (a thread costs more
/// than it saves there).
pub fn auto_threads(local_size: usize) -> usize {
    if local_size < PARALLEL_FROM {
        return 1;
    }
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(MAX_THREADS)
}

/// Fewer ranks than this start from the calling thread alone (auto).
pub const PARALLEL_FROM: usize = 4;

/// At most this many threads start ranks, whatever was asked.
pub const MAX_THREADS: usize = 16;

/// Starts `reqs` on a node of `local_size` ranks from the calling thread
/// and `threads - 1` helpers (fewer if they cannot be made). The calling
/// thread must be one that lives as long as dosrun (the main thread; see
/// [`Spawner::spawn`]). Every signal is blocked in it for the duration.
pub fn spawn_all(
    spawner: Spawner,
    local_size: usize,
    reqs: Vec<Request>,
    threads: usize,
) -> Outcome {
    let n = reqs.len();
    let step = |what| move |err| SpawnError { what, err };
    let fail_all = |e: SpawnError| Outcome {
        started: Vec::new(),
        failed: (n > 0).then_some((0, e)),
    };
    let _blocked = match BlockedSignals::new() {
        Ok(b) => b,
        Err(e) => return fail_all(step("sigprocmask")(e)),
    };
    let mut stack = match ChildStack::new() {
        Ok(s) => s,
        Err(e) => return fail_all(step("mmap")(e)),
    };
    let batch = Arc::new(Batch {
        spawner,
        local_size,
        reqs,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        results: Mutex::new((0..n).map(|_| None).collect()),
        filled: Condvar::new(),
    });
    let helpers = threads.clamp(1, MAX_THREADS).min(n.max(1)) - 1;
    if helpers > 0 {
        for tx in pool(helpers) {
            // A helper that has died took its receiver with it: skip it.
            let _ = tx.send(Arc::clone(&batch));
        }
    }
    batch.work(&mut stack);
    // No thread takes a rank after this: `next` is past the end for good.
    let taken = batch.next.swap(n, Ordering::AcqRel).min(n);
    let mut results = batch.results.lock().unwrap_or_else(PoisonError::into_inner);
    while results[..taken].iter().any(Option::is_none) {
        results = batch
            .filled
            .wait(results)
            .unwrap_or_else(PoisonError::into_inner);
    }
    let results: Vec<_> = results.iter_mut().map(Option::take).collect();
    in_order(results)
}

/// The outcome of one thread from the results of several: the ranks up to
/// the first failure (or the first request nobody took) started, the ones
/// after it stopped.
fn in_order(results: Vec<Option<Result<Spawned, SpawnError>>>) -> Outcome {
    let mut out = Outcome {
        started: Vec::with_capacity(results.len()),
        failed: None,
    };
    let mut stopping = false;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(s)) if !stopping => out.started.push(s),
            Some(Ok(s)) => {
                // Started by another thread after an earlier rank failed.
                sys::kill_group(s.pid, libc::SIGKILL);
                sys::reap(s.pid);
            }
            Some(Err(e)) if !stopping => {
                out.failed = Some((i, e));
                stopping = true;
            }
            // Only the first failure is told; nobody took the rest.
            Some(Err(_)) | None => stopping = true,
        }
    }
    out
}

/// One node's requests, shared by the threads that start them.
struct Batch {
    spawner: Spawner,
    local_size: usize,
    reqs: Vec<Request>,
    /// The next request to take.
    next: AtomicUsize,
    /// A request failed: take no more.
    failed: AtomicBool,
    results: Mutex<Vec<Option<Result<Spawned, SpawnError>>>>,
    /// Signalled when a result is stored.
    filled: Condvar,
}

impl Batch {
    /// Takes requests until none is left or one has failed.
    fn work(&self, stack: &mut ChildStack) {
        while !self.failed.load(Ordering::Acquire) {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            let Some(r) = self.reqs.get(i) else { break };
            let res = self.spawner.spawn(
                stack,
                r.placement,
                self.local_size,
                r.stdin,
                r.affinity.clone(),
            );
            if res.is_err() {
                self.failed.store(true, Ordering::Release);
            }
            self.results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(res);
            self.filled.notify_all();
        }
    }
}

/// The helper threads, made on first use and never ended (see the module
/// docs): each takes batches from its channel.
static POOL: Mutex<Vec<Sender<Arc<Batch>>>> = Mutex::new(Vec::new());

/// The senders of `k` helpers, making the missing ones. Fewer if a thread
/// cannot be made.
fn pool(k: usize) -> Vec<Sender<Arc<Batch>>> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    while pool.len() < k {
        let (tx, rx) = mpsc::channel::<Arc<Batch>>();
        let made = std::thread::Builder::new()
            .name("dosrun-spawn".into())
            .spawn(move || {
                // Made by a thread with every signal blocked, so no signal
                // reached it before this; blocked for good (never dropped).
                let Ok(blocked) = BlockedSignals::new() else {
                    return;
                };
                std::mem::forget(blocked);
                let Ok(mut stack) = ChildStack::new() else {
                    return;
                };
                while let Ok(batch) = rx.recv() {
                    batch.work(&mut stack);
                }
            });
        if made.is_err() {
            break;
        }
        pool.push(tx);
    }
    pool.iter().take(k).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::Launcher;
    use std::ffi::OsString;

    /// The children of the threads that may have started ranks here: the
    /// calling thread and the pool's.
    fn children_of_spawning_threads() -> Vec<i32> {
        let me = sys_gettid();
        let mut out = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let tid: i32 = t.file_name().to_str().unwrap().parse().unwrap();
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if tid != me && comm.trim() != "dosrun-spawn" {
                continue;
            }
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(c.split_whitespace().map(|p| p.parse::<i32>().unwrap()));
        }
        out.sort_unstable();
        out
    }

    fn sys_gettid() -> i32 {
        // SAFETY: gettid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as i32 }
    }

    fn sleeper() -> Spawner {
        Launcher {
            program: "/bin/sh".into(),
            argv0: "sh".into(),
            args: vec!["-c".into(), "exec sleep 30".into()],
            env: vec![(OsString::from("DOS_POOL_TEST"), OsString::from("1"))],
            shm_fd: None,
            nofile: None,
            pmi_pair: true,
        }
        .spawner()
        .unwrap()
    }

    fn reqs(n: usize, bad: Option<usize>) -> Vec<Request> {
        (0..n)
            .map(|i| Request {
                placement: Placement {
                    rank: 100 + i,
                    node_id: 0,
                    local_rank: i,
                },
                stdin: false,
                // Only a CPU that does not exist: the child's
                // sched_setaffinity fails (EINVAL) before its exec.
                affinity: (Some(i) == bad).then(|| CpuMask::from_pus(&[4000])),
            })
            .collect()
    }

    fn stop(started: Vec<Spawned>) {
        for s in started {
            sys::kill_group(s.pid, libc::SIGKILL);
            sys::reap(s.pid);
        }
    }

    /// One test, so that no other test of this module starts children of
    /// the pool's threads meanwhile.
    #[test]
    fn ranks_start_in_order_from_several_threads_and_a_failure_leaves_no_process() {
        // All of them, from 4 threads: in local-rank order, each its own.
        let n = 24;
        let out = spawn_all(sleeper(), n, reqs(n, None), 4);
        assert!(out.failed.is_none(), "{:?}", out.failed);
        assert_eq!(out.started.len(), n);
        let mut pids: Vec<i32> = out.started.iter().map(|s| s.pid).collect();
        for (i, s) in out.started.iter().enumerate() {
            assert!(s.pmi.is_some());
            let env = std::fs::read(format!("/proc/{}/environ", s.pid)).unwrap();
            let env = String::from_utf8_lossy(&env);
            // The exec may not have happened yet when /proc is read: wait.
            let rank = format!("DOS_RANK={}", 100 + i);
            let mut env = env.into_owned();
            for _ in 0..200 {
                if env.contains(&rank) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                env = String::from_utf8_lossy(
                    &std::fs::read(format!("/proc/{}/environ", s.pid)).unwrap(),
                )
                .into_owned();
            }
            assert!(env.split('\0').any(|v| v == rank), "rank {i}: {env}");
            assert!(env.split('\0').any(|v| v == format!("DOS_LOCAL_RANK={i}")));
            assert!(env.split('\0').any(|v| v == "DOS_POOL_TEST=1"));
        }
        pids.sort_unstable();
        assert_eq!(children_of_spawning_threads(), pids);
        stop(out.started);
        assert_eq!(children_of_spawning_threads(), Vec::<i32>::new());

        // Rank 5 of 24 cannot start: 0-4 started, 5 failed with its error,
        // and whatever another thread started after it is gone.
        for trial in 0..5 {
            let out = spawn_all(sleeper(), n, reqs(n, Some(5)), 4);
            let (i, e) = out.failed.as_ref().expect("rank 5 fails");
            assert_eq!(*i, 5, "trial {trial}");
            assert_eq!(e.err.raw_os_error(), Some(libc::EINVAL), "{e}");
            assert_eq!(out.started.len(), 5, "trial {trial}");
            let mut pids: Vec<i32> = out.started.iter().map(|s| s.pid).collect();
            pids.sort_unstable();
            assert_eq!(children_of_spawning_threads(), pids, "trial {trial}");
            stop(out.started);
        }

        // The first rank fails: nothing started, nothing left.
        let out = spawn_all(sleeper(), 6, reqs(6, Some(0)), 3);
        assert_eq!(out.failed.as_ref().map(|f| f.0), Some(0));
        assert!(out.started.is_empty());
        assert_eq!(children_of_spawning_threads(), Vec::<i32>::new());

        // More threads than ranks, and none.
        let out = spawn_all(sleeper(), 2, reqs(2, None), 16);
        assert_eq!(out.started.len(), 2);
        stop(out.started);
        let out = spawn_all(sleeper(), 0, Vec::new(), 2);
        assert!(out.started.is_empty() && out.failed.is_none());
    }

    #[test]
    fn auto_is_one_thread_for_few_ranks() {
        assert_eq!(auto_threads(1), 1);
        assert_eq!(auto_threads(PARALLEL_FROM - 1), 1);
        assert!((1..=MAX_THREADS).contains(&auto_threads(64)));
    }
}
