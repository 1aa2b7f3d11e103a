//! The in-process test harness fails, and never hangs, when a rank panics
//! while the others wait for it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_panicking_rank_aborts_the_process_instead_of_hanging() {
    if std::env::var_os("DOS_HARNESS_CHILD").is_some() {
        dos::testing::run_threads(2, |w| {
            if w.rank() == 1 {
                panic!("rank 1 gives up");
            }
            // Rank 0 would wait here for rank 1 for ever.
            let _ = w.barrier();
        });
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panicking_rank_aborts_the_process_instead_of_hanging",
            // Captured output, as under `cargo test`: the message must get out anyway.
            "--test-threads=1",
        ])
        .env("DOS_HARNESS_CHILD", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the job with a panicked rank hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1 gives up"), "{err}");
    assert!(
        err.contains(
            "rank 1 of 2 of test a_panicking_rank_aborts_the_process_instead_of_hanging panicked"
        ),
        "{err}"
    );
}
