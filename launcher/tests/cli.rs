//! dosrun's command line and the environment: `--grace` defaults to
//! `DOS_KILL_GRACE_MS` through clap's env support.

use std::process::Command;

fn dosrun() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dosrun"))
}

#[test]
fn grace_comes_from_its_variable() {
    let out = dosrun()
        .env("DOS_KILL_GRACE_MS", "soon")
        .args(["-n", "1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--grace") && err.contains("DOS_KILL_GRACE_MS"),
        "{err}"
    );

    let out = dosrun()
        .env("DOS_KILL_GRACE_MS", "300")
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOS_KILL_GRACE_MS=300"));

    let out = dosrun()
        .env("DOS_KILL_GRACE_MS", "300")
        .args(["-n", "1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn program_options_reach_the_program() {
    let out = dosrun()
        .args([
            "-n",
            "1",
            "sh",
            "-c",
            "echo \"$@\"",
            "sh",
            "-np",
            "5",
            "--",
            "-x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-np 5 -- -x\n");
}
