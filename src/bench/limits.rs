//! Which limit bounds a crowded run: the benchmark's own open-files limit (raised to the
//! hard limit before it connects), and the nodes' caps as their refusals name them.
//!
//! A run of N connections needs N descriptors here plus a few for the runtime, the
//! discovery and the writer ([`CLIENT_RESERVED_FDS`]); a run that cannot have them is
//! refused before it starts, naming the limit, instead of failing part-way with
//! `EMFILE`. On the nodes' side the failures of a run are mapped to the setting that
//! caused them ([`bounded_by`]).

use std::collections::BTreeMap;

use super::BenchError;

/// Descriptors the benchmark keeps for itself besides its connections.
pub const CLIENT_RESERVED_FDS: u64 = 64;

/// Raises this process's open-files soft limit to the hard limit; returns the limit now
/// in force (`None` when it cannot be read).
pub fn raise_client_limit() -> Option<u64> {
    crate::serve::raise_open_files_limit().ok()
}

/// Refuses a run of `conns` connections that the open-files `limit` cannot hold.
pub fn check_client_descriptors(conns: usize, limit: Option<u64>) -> Result<(), BenchError> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let needed = (conns as u64).saturating_add(CLIENT_RESERVED_FDS);
    if needed > limit {
        return Err(BenchError::Invalid(format!(
            "--conns {conns} needs {needed} file descriptors, but this process may open \
             {limit} (its hard limit): raise `ulimit -Hn` or lower --conns"
        )));
    }
    Ok(())
}

/// The limits that refusals and failures of a run point at, one sentence each.
pub fn bounded_by(errors: &BTreeMap<String, u64>, client_limit: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    for (label, n) in errors {
        let why = match label.as_str() {
            "TOO_MANY_STREAMS" => "api.max_event_streams of a node (503 TOO_MANY_STREAMS)".into(),
            "TOO_MANY_CONNECTIONS" => {
                "api.max_connections of a node, every connection busy (503 TOO_MANY_CONNECTIONS)"
                    .into()
            }
            "QUEUE_FULL" => "api.max_waiters_per_key / api.max_waiters (429 QUEUE_FULL)".into(),
            "transport:connect_out_of_descriptors" => format!(
                "this client's open-files limit ({})",
                client_limit.map_or("unknown".into(), |l| l.to_string())
            ),
            "transport:connect_out_of_ports" => {
                "this client's ephemeral ports (net.ipv4.ip_local_port_range)".into()
            }
            "transport:timeout" | "transport:connect_connection_refused" => {
                "a node's listen backlog or accept rate (connects timed out or were refused)".into()
            }
            "transport:closed"
            | "transport:http"
            | "transport:canceled"
            | "transport:connect_connection_reset" => {
                "a node closed connections (evicted at api.max_connections, or out of descriptors)"
                    .into()
            }
            _ => continue,
        };
        out.push(format!("{why}: {n}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_its_connections_plus_a_reserve() {
        assert!(check_client_descriptors(1_000, Some(1_064)).is_ok());
        let err = check_client_descriptors(1_001, Some(1_064)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("1065") && msg.contains("1064"), "{msg}");
        assert!(check_client_descriptors(usize::MAX, None).is_ok());
    }

    #[test]
    fn failures_name_the_limit_behind_them() {
        let errors: BTreeMap<String, u64> = [
            ("TOO_MANY_STREAMS".to_string(), 3),
            ("transport:connect_out_of_descriptors".to_string(), 2),
            ("NO_LEADER".to_string(), 1),
        ]
        .into_iter()
        .collect();
        let b = bounded_by(&errors, Some(1_024));
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].contains("api.max_event_streams") && b[0].ends_with(": 3"));
        assert!(b[1].contains("open-files limit (1024)") && b[1].ends_with(": 2"));
        assert!(bounded_by(&BTreeMap::new(), None).is_empty());
    }

    #[test]
    fn the_limit_can_be_raised_and_read() {
        let limit = raise_client_limit().expect("getrlimit works on linux");
        assert!(limit >= 64);
    }
}
