//! The Python tools some tests run (a Prometheus text parser, an OpenAPI validator), in
//! a venv next to the build (`<target dir>/py`), created on first use by
//! `scripts/python-env.sh` from the pinned `scripts/python-requirements.txt`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The venv's python, set up if needed. Panics with the script's output when it cannot
/// be set up (no python3 with venv, no package registry).
pub fn python() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary sits in <target>/<profile>/deps");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env.sh");
    let out = Command::new(&script)
        .arg(target.join("py"))
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        out.status.success(),
        "scripts/python-env.sh failed (needs python3 with venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs `python -c script` with `input` on stdin; returns stdout, panics with stderr
/// when the script fails.
pub fn run(script: &str, input: &[u8]) -> String {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("write to python");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
