//! The server processes behind the endpoints, when they run on this machine: which
//! process listens on each endpoint's port, and its resident memory and open
//! descriptors, sampled before and after the benchmark opens its connections.
//!
//! A node does not report its own RSS over HTTP, so the benchmark looks it up the way
//! `ss -ltnp` does: the listening socket of the port in `/proc/net/tcp` (and `tcp6`)
//! gives an inode, and the process with a descriptor `socket:[inode]` is the node.
//! RSS is `VmRSS` of `/proc/<pid>/status`, descriptors the entries of `/proc/<pid>/fd`.
//!
//! Linux only, and only for processes this user may inspect: for a remote endpoint (or
//! another user's server) the lookup finds nothing and the report says `null`. The
//! deltas are what the process holds, allocator caches included (mimalloc keeps freed
//! pages for reuse), so they are an upper bound of what a connection costs.

use std::path::Path;

use serde::Serialize;

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// The socket tables the listener may be in.
const TCP_TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// One sample of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// The process that listens on `port` of this machine, if this user can see it.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<u64> = TCP_TABLES
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Other users' processes are unreadable: skipped.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The inodes of the sockets listening on `port` in the text of a `/proc/net/tcp{,6}`.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let hex_port = local.rsplit_once(':')?.1;
            let p = u16::from_str_radix(hex_port, 16).ok()?;
            (p == port && *state == TCP_LISTEN).then_some(inode)
        })
        .collect()
}

/// RSS and descriptors of `pid` now; `None` when it is gone or unreadable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let rss_kib = vm_rss_kib(&status)?;
    let fds = std::fs::read_dir(dir.join("fd")).ok()?.count() as u64;
    Some(ProcSample { rss_kib, fds })
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(value)
}

/// The port of a parsed endpoint (`host:port` or `https://host:port`).
pub fn endpoint_port(endpoint: &str) -> Option<u16> {
    let authority = crate::wire::endpoint_authority(endpoint).0;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// What one node's process held before the benchmark's connections, once they were
/// open (idle), and at the end of the run, with the connections it served.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeUsage {
    /// The endpoint (API address) of the node.
    pub api: String,
    /// Its process, when found on this machine.
    pub pid: Option<u32>,
    /// Benchmark connections (streams, waiters, clients) to this node; in `connect`
    /// mode those still open at the sample.
    pub conns: usize,
    pub before: Option<ProcSample>,
    /// Right after every connection was open (and, for streams, subscribed).
    pub opened: Option<ProcSample>,
    /// At the end of the measured window, connections still open.
    pub end: Option<ProcSample>,
    /// `(opened - before)` RSS per connection, bytes.
    pub rss_per_conn_bytes: Option<u64>,
    /// `(end - before)` RSS per connection, bytes: after the load ran through them.
    pub rss_per_conn_end_bytes: Option<u64>,
    /// `(opened - before)` descriptors per connection.
    pub fds_per_conn: Option<f64>,
}

impl NodeUsage {
    /// Looks up the process of `api` and samples it (the `before` sample).
    pub fn start(api: &str, conns: usize) -> NodeUsage {
        let pid = endpoint_port(api).and_then(listener_pid);
        NodeUsage {
            api: api.to_string(),
            pid,
            conns,
            before: pid.and_then(sample),
            ..NodeUsage::default()
        }
    }

    /// Takes the `opened` sample.
    pub fn opened(&mut self) {
        self.opened = self.pid.and_then(sample);
        self.rss_per_conn_bytes = per_conn_bytes(self.before, self.opened, self.conns);
        self.fds_per_conn = match (self.before, self.opened) {
            (Some(b), Some(o)) if self.conns > 0 => {
                let per = o.fds.saturating_sub(b.fds) as f64 / self.conns as f64;
                Some((per * 100.0).round() / 100.0)
            }
            _ => None,
        };
    }

    /// Takes the `end` sample.
    pub fn ended(&mut self) {
        self.end = self.pid.and_then(sample);
        self.rss_per_conn_end_bytes = per_conn_bytes(self.before, self.end, self.conns);
    }
}

/// RSS growth from `before` to `after` per connection, in bytes (0 if it shrank).
fn per_conn_bytes(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    conns: usize,
) -> Option<u64> {
    match (before, after) {
        (Some(b), Some(a)) if conns > 0 => {
            Some(a.rss_kib.saturating_sub(b.rss_kib) * 1024 / conns as u64)
        }
        _ => None,
    }
}

/// The processes of `endpoints`, each with the connections `per_endpoint` counts.
pub fn start_all(
    endpoints: &[String],
    per_endpoint: &std::collections::BTreeMap<String, usize>,
) -> Vec<NodeUsage> {
    endpoints
        .iter()
        .map(|e| NodeUsage::start(e, per_endpoint.get(e).copied().unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_socket_of_a_port() {
        // Two lines of a real /proc/net/tcp: a listener on 127.0.0.1:7001 (0x1B59) and
        // an established connection from that port.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 100 0 0 10 0\n\
           1: 0100007F:1B59 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 515151 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listening_inodes(table, 7001), vec![424242]);
        assert!(listening_inodes(table, 7002).is_empty());
        assert!(listening_inodes("garbage\nnot a table", 7001).is_empty());
    }

    #[test]
    fn reads_vm_rss_in_kib() {
        let status = "Name:\tbaton\nVmPeak:\t 100 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_kib(status), Some(51_234));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None, "unexpected unit");
    }

    #[test]
    fn ports_of_endpoints() {
        assert_eq!(endpoint_port("127.0.0.1:7001"), Some(7001));
        assert_eq!(endpoint_port("https://localhost:7443"), Some(7443));
        assert_eq!(endpoint_port("[::1]:80"), Some(80));
        assert_eq!(endpoint_port("no-port"), None);
    }

    #[test]
    fn deltas_are_per_connection() {
        let mut u = NodeUsage {
            conns: 1_000,
            before: Some(ProcSample {
                rss_kib: 50_000,
                fds: 40,
            }),
            ..NodeUsage::default()
        };
        u.rss_per_conn_bytes = per_conn_bytes(
            u.before,
            Some(ProcSample {
                rss_kib: 60_000,
                fds: 1_040,
            }),
            u.conns,
        );
        assert_eq!(u.rss_per_conn_bytes, Some(10_240));
        assert_eq!(
            per_conn_bytes(u.before, Some(ProcSample { rss_kib: 1, fds: 1 }), 10),
            Some(0),
            "a shrinking RSS is no cost"
        );
        assert_eq!(per_conn_bytes(u.before, None, 10), None);
        assert_eq!(per_conn_bytes(u.before, u.before, 0), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("linux /proc");
        assert!(s.rss_kib > 0 && s.fds > 0, "{s:?}");
    }

    #[test]
    fn a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
    }
}
