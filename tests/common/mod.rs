//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python of the project's PyTorch environment (`exec/env.sh` exports `AMFMN_PYTHON`).
pub fn python() -> PathBuf {
    std::env::var_os("AMFMN_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is set");
        Path::new(&home).join(".cache/amfmn/torch-2.11.0/bin/python")
    })
}

/// Runs a reference script of `tests/reference/` with arguments; panics with its stderr on failure.
pub fn run_reference(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run exec/test.sh to install it): {e}", python().display()));
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs the `amfmn` binary.
pub fn amfmn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amfmn")).args(args).output().expect("amfmn runs")
}

/// Runs `amfmn` in `dir`.
pub fn amfmn_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amfmn")).current_dir(dir).args(args).output().expect("amfmn runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
