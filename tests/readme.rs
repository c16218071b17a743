//! The README's runnable blocks (quick start, curl session, access control, TLS, Tracker,
//! membership), run verbatim against a fresh local cluster.
//!
//! Every ```` ```sh ```` block of README.md that follows a line starting with
//! `<!-- tests/readme.rs` is run, in README order, by one `bash` (`set -euo pipefail`, as
//! if pasted into one terminal that stops at the first error), in a copy of the
//! repository's `cluster.toml` and `scripts/` in a temp dir (each block starts there:
//! some `cd` elsewhere). The blocks use the fixed
//! ports of `cluster.toml` (7001–7003, 7101–7103, gRPC 7401–7403), so the run happens in a network
//! namespace of its own (`unshare --net`, as root or with a user namespace), where they
//! are free whatever runs on the machine. `BATON_BIN` hands the scripts the binary cargo
//! built for this test, so nothing is compiled inside the test; `BATON_INSTALL_DIR` puts
//! `scripts/install.sh`'s copy into the temp dir, first on the PATH.
//!
//! A block's `#> ANSWER` comment lines are what it must print: they must appear in its
//! output in order, equal after [`normalise`] (timestamps and token numbers vary from
//! run to run), and the block must print no other JSON line. At the end the nodes are
//! stopped by the PIDs in the copy's `target/cluster/nN.pid`.
//!
//! A block whose marker says `needs grpcurl` calls the nodes' gRPC service with grpcurl:
//! it runs with grpcurl's directory first on the `PATH` (found by [`common::grpcurl`]:
//! `GRPCURL`, else the `PATH`); without grpcurl such blocks are skipped, except in CI
//! (`BATON_REQUIRE_GRPCURL=1` or `CI`), where the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// What marks a README block as run by this test.
const MARKER: &str = "<!-- tests/readme.rs";
/// What a marker says of a block that calls grpcurl.
const NEEDS_GRPCURL: &str = "needs grpcurl";
/// Printed between blocks, to split the output.
const BLOCK_END: &str = "@@ readme block end @@";
/// Upper bound for the whole run (the cluster start waits for readiness with its own 60 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// One marked shell block of the README.
#[derive(Debug)]
struct Block {
    /// 1-based README line of the opening fence.
    line: usize,
    text: String,
    /// The `#> ` lines, without the prefix.
    answers: Vec<String>,
    /// Its marker says [`NEEDS_GRPCURL`].
    needs_grpcurl: bool,
}

fn marked_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut marked = false;
    let mut needs_grpcurl = false;
    let mut current: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(block) = current.as_mut() {
            if line.trim_end() == "```" {
                blocks.push(current.take().expect("inside a block"));
            } else {
                if let Some(answer) = line.strip_prefix("#> ") {
                    block.answers.push(answer.to_string());
                }
                block.text.push_str(line);
                block.text.push('\n');
            }
        } else if line.starts_with(MARKER) {
            marked = true;
            needs_grpcurl = line.contains(NEEDS_GRPCURL);
        } else if marked && line.starts_with("```") {
            assert_eq!(
                line.trim_end(),
                "```sh",
                "README line {}: a block marked for tests/readme.rs must be ```sh",
                i + 1
            );
            current = Some(Block {
                line: i + 1,
                text: String::new(),
                answers: Vec::new(),
                needs_grpcurl,
            });
            marked = false;
        } else if marked && !line.trim().is_empty() && !line.starts_with("<!--") {
            // A marker followed by prose, not by the block: a mistake in the README.
            panic!(
                "README line {}: expected a ```sh block after the marker",
                i + 1
            );
        }
    }
    assert!(current.is_none(), "README ends inside a block");
    blocks
}

/// Replaces what differs between runs: RFC 3339 timestamps become `<time>`, and the
/// number after `token":`, `token ` or `"id":"` (a Tracker lock id) becomes `<n>`
/// (fencing tokens are log indexes, which depend on elections and sweeps).
fn normalise(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = timestamp_len(&chars[i..]) {
            out.push_str("<time>");
            i += len;
            continue;
        }
        out.push(chars[i]);
        i += 1;
        if out.ends_with("token\":") || out.ends_with("token ") || out.ends_with("\"id\":\"") {
            let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                out.push_str("<n>");
                i += digits;
            }
        }
    }
    out
}

/// Length of an RFC 3339 UTC timestamp (`2026-11-22T12:35:00.323Z`) at the start of `s`.
fn timestamp_len(s: &[char]) -> Option<usize> {
    const SHAPE: &str = "dddd-dd-ddTdd:dd:dd";
    if s.len() < SHAPE.len() {
        return None;
    }
    for (c, want) in s.iter().zip(SHAPE.chars()) {
        let ok = if want == 'd' {
            c.is_ascii_digit()
        } else {
            *c == want
        };
        if !ok {
            return None;
        }
    }
    let mut len = SHAPE.len();
    if s.get(len) == Some(&'.') {
        let digits = s[len + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        len += 1 + digits;
    }
    (s.get(len) == Some(&'Z')).then_some(len + 1)
}

/// Checks one block's output against its `#>` answers; returns what is wrong.
fn check_block(block: &Block, output: &[&str]) -> Result<(), String> {
    let mut next = 0;
    for answer in &block.answers {
        let want = normalise(answer);
        match output[next..].iter().position(|l| normalise(l) == want) {
            Some(at) => next += at + 1,
            None => {
                return Err(format!(
                    "answer not printed (after output line {next}):\n  want {answer}"
                ))
            }
        }
    }
    let json_printed = output.iter().filter(|l| l.starts_with('{')).count();
    let json_expected = block.answers.iter().filter(|a| a.starts_with('{')).count();
    if json_printed != json_expected {
        return Err(format!(
            "{json_printed} JSON lines printed, {json_expected} shown in the README"
        ));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The nodes the blocks started, killed by PID (only processes running in the copy) on
/// drop, so that a failed or timed-out run leaves nothing behind.
struct Nodes {
    repo: PathBuf,
}

impl Nodes {
    /// PIDs from the PID files whose process still runs with its working directory in
    /// the copy: a PID file may outlive its process, and the PID be reused.
    fn running(&self) -> Vec<String> {
        let mut pids = Vec::new();
        let files = std::fs::read_dir(self.repo.join("target/cluster"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "pid"));
        for file in files {
            let Ok(pid) = std::fs::read_to_string(file) else {
                continue;
            };
            let pid = pid.trim().to_string();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            if !zombie && cwd.as_deref() == Some(self.repo.as_path()) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for pid in self.running() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// `unshare` arguments that give a new network namespace here: as root plain
/// `--net`, otherwise with a user namespace mapping us to root.
fn unshare_args() -> Vec<&'static str> {
    for args in [vec!["--net"], vec!["--net", "--map-root-user"]] {
        let ok = Command::new("unshare")
            .args(&args)
            .args(["ip", "link", "set", "lo", "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return args;
        }
    }
    panic!(
        "this test runs the README's blocks in a network namespace of their own: it needs \
         `unshare --net` (root, or unprivileged user namespaces) and `ip` (iproute2)"
    );
}

#[test]
fn readme_quick_start_and_curl_session_work_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let mut blocks = marked_blocks(&readme);
    assert!(
        blocks.len() >= 2,
        "expected the quick start and the curl session to be marked, found {} blocks",
        blocks.len()
    );
    for tool in ["bash", "curl", "jq", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "the README's blocks need {tool} on the PATH");
    }
    let unshare = unshare_args();
    // grpcurl's directory goes first on the PATH; without grpcurl (outside CI) the
    // blocks that need it are left out.
    let grpcurl_dir = if blocks.iter().any(|b| b.needs_grpcurl) {
        common::grpcurl().map(|bin| bin.parent().expect("a file's directory").to_path_buf())
    } else {
        None
    };
    if grpcurl_dir.is_none() {
        blocks.retain(|b| !b.needs_grpcurl);
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("baton");
    std::fs::create_dir_all(&repo).expect("create copy");
    std::fs::copy(root.join("cluster.toml"), repo.join("cluster.toml")).expect("copy config");
    copy_dir(&root.join("scripts"), &repo.join("scripts"));
    let bin_dir = tmp.path().join("bin");
    let nodes = Nodes { repo: repo.clone() };

    let mut driver = String::from("exec 2>&1\nset -euo pipefail\nip link set lo up\n");
    for block in &blocks {
        // Each block starts in the copy, as a reader runs each from the repository
        // (some `cd` into a temp dir of their own).
        driver.push_str(&format!("cd '{}'\n", repo.display()));
        driver.push_str(&block.text);
        driver.push_str(&format!("printf '\\n%s\\n' '{BLOCK_END}'\n"));
    }
    let driver_path = tmp.path().join("readme-blocks.sh");
    std::fs::write(&driver_path, driver).expect("write driver");
    // stdout is a pipe (the driver sends its stderr there too): a block may write to
    // /dev/stderr, and reopening a regular file through it would truncate the file.
    let err_path = tmp.path().join("unshare.err");
    let err = std::fs::File::create(&err_path).expect("create stderr file");

    let path = format!(
        "{}:{}{}",
        bin_dir.display(),
        grpcurl_dir
            .map(|d| format!("{}:", d.display()))
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("unshare")
        .args(&unshare)
        .arg("bash")
        .arg(&driver_path)
        .current_dir(&repo)
        .env("PATH", path)
        .env("BATON_BIN", env!("CARGO_BIN_EXE_baton"))
        .env("BATON_INSTALL_DIR", &bin_dir)
        .env_remove("BATON_ENDPOINTS")
        .env_remove("BATON_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start unshare");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the blocks") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The nodes write to their own logs, so the pipe closes with the driver; a stray
    // holder of it must not hang the test.
    let output = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default()
        + &std::fs::read_to_string(&err_path).unwrap_or_default();
    let node_logs: String = (1..=3)
        .map(|id| {
            let log = repo.join(format!("target/cluster/n{id}.log"));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- n{id}.log (last lines)\n{}\n", tail.join("\n"))
        })
        .collect();
    let context = format!("--- output of the blocks\n{output}\n{node_logs}");

    match status {
        None => panic!("the README's blocks did not finish in {RUN_TIMEOUT:?}\n{context}"),
        Some(s) if !s.success() => panic!("the README's blocks failed ({s})\n{context}"),
        Some(_) => {}
    }
    let separator = format!("\n{BLOCK_END}\n");
    let mut parts = output.split(separator.as_str());
    for block in &blocks {
        let part = parts.next().unwrap_or_default();
        let lines: Vec<&str> = part.lines().map(str::trim_end).collect();
        if let Err(e) = check_block(block, &lines) {
            panic!("README block at line {}: {e}\n{context}", block.line);
        }
    }

    // Stop the cluster as the README says, then make sure no node is left.
    let stop = Command::new("bash")
        .arg(repo.join("scripts/cluster.sh"))
        .arg("stop")
        .env("BATON_BIN", env!("CARGO_BIN_EXE_baton"))
        .output()
        .expect("run scripts/cluster.sh stop");
    assert!(
        stop.status.success(),
        "scripts/cluster.sh stop failed: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(nodes.running(), Vec::<String>::new(), "nodes left running");
}

#[test]
fn normalise_masks_timestamps_and_tokens_only() {
    assert_eq!(
        normalise(r#"{"token":17,"expires_at":"2026-11-22T12:35:30.323Z","ttl_ms":30000}"#),
        r#"{"token":<n>,"expires_at":"<time>","ttl_ms":30000}"#
    );
    assert_eq!(
        normalise("held by me with token 3 until 2026-11-22T12:35:30Z"),
        "held by me with token <n> until <time>"
    );
    assert_eq!(
        normalise("2026-11-22 12:35 ttl 30000"),
        "2026-11-22 12:35 ttl 30000"
    );
}

#[test]
fn check_block_rejects_a_missing_or_unexpected_answer() {
    let block = Block {
        line: 1,
        text: String::new(),
        answers: vec![r#"{"released":true}"#.into()],
        needs_grpcurl: false,
    };
    assert!(check_block(&block, &["building", r#"{"released":true}"#]).is_ok());
    assert!(check_block(&block, &[r#"{"released":false}"#]).is_err());
    assert!(check_block(&block, &[r#"{"released":true}"#, r#"{"extra":1}"#]).is_err());
}

#[test]
fn marked_blocks_collects_only_marked_sh_blocks_and_their_answers() {
    let readme =
        "intro\n```sh\nnot marked\n```\n<!-- tests/readme.rs -->\n```sh\necho hi\n#> hi\n```\n";
    let blocks = marked_blocks(readme);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 6);
    assert_eq!(blocks[0].text, "echo hi\n#> hi\n");
    assert_eq!(blocks[0].answers, vec!["hi".to_string()]);
    assert!(!blocks[0].needs_grpcurl);
}

#[test]
fn a_marker_that_needs_grpcurl_marks_its_block() {
    let readme = "<!-- tests/readme.rs: needs grpcurl -->\n```sh\ngrpcurl list\n```\n<!-- tests/readme.rs -->\n```sh\necho\n```\n";
    let blocks = marked_blocks(readme);
    assert_eq!(
        blocks.iter().map(|b| b.needs_grpcurl).collect::<Vec<_>>(),
        [true, false]
    );
}
