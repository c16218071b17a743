//! Safe defaults: a node reachable from other hosts must not run open.
//!
//! A node whose API or Raft address is not loopback (127.0.0.0/8 or `::1`) is reachable
//! from the network, where anyone could force-release locks, join Raft with the public
//! default secret, or read API keys off the wire. Such a node refuses to start unless
//! access control is on (`auth.enabled`), the Raft secret is not the default one, and
//! both listeners speak TLS (`tls.cert_file`). `baton server --insecure` starts it anyway,
//! with a warning on every start naming what is missing. A node on loopback (the local
//! `cluster.toml`) needs none of this: only processes on the same host reach it.
//!
//! # Caveats
//! - Only this node's own addresses decide; a loopback node in a cluster whose other
//!   nodes are elsewhere could not reach them anyway.
//! - 127.0.0.2 and the rest of 127.0.0.0/8 count as loopback (they are, on Linux: every
//!   address in the block is local and never leaves the host).

use std::net::SocketAddr;

use crate::config::{Config, NodeConfig, RaftConfig};

/// What makes a node on a non-loopback address unsafe, each naming the setting to
/// change; empty when the node is safe or listens on loopback only.
pub fn unsafe_settings(config: &Config, me: &NodeConfig) -> Vec<String> {
    let exposed: Vec<&str> = [&me.api, &me.raft]
        .into_iter()
        .chain(me.grpc.as_ref())
        .filter(|addr| !is_loopback(addr))
        .map(String::as_str)
        .collect();
    if exposed.is_empty() {
        return Vec::new();
    }
    let mut gaps = Vec::new();
    if !config.auth.enabled {
        gaps.push("auth.enabled is false: anyone who reaches the API may release any lock".into());
    }
    if config.raft.secret == RaftConfig::default().secret {
        gaps.push(
            "raft.secret is the public default: anyone who reaches the Raft port may join".into(),
        );
    }
    if !config.tls.enabled() {
        gaps.push(
            "tls.cert_file is not set: API keys and the Raft secret would cross the network in the clear"
                .into(),
        );
    }
    gaps.into_iter()
        .map(|gap: String| format!("{gap} (listening on {})", exposed.join(", ")))
        .collect()
}

/// `addr` (an `ip:port` the config validated) is in 127.0.0.0/8 or is `::1`.
fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: &str, raft: &str, extra: &str) -> Config {
        let text = format!(
            "[[nodes]]\nid = 1\napi = \"{api}\"\nraft = \"{raft}\"\ndata_dir = \"d1\"\n{extra}"
        );
        Config::parse(&text, Vec::new()).unwrap()
    }

    fn gaps(api: &str, raft: &str, extra: &str) -> Vec<String> {
        let c = config(api, raft, extra);
        unsafe_settings(&c, c.node(1).unwrap())
    }

    const SAFE: &str = "[auth]\nenabled = true\nkeys_file = \"keys\"\n[raft]\nsecret = \"not the default\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";

    #[test_case::test_case("127.0.0.1:7001", "127.0.0.1:7101" ; "v4 loopback")]
    #[test_case::test_case("127.0.0.2:7001", "127.9.8.7:7101" ; "rest of 127 slash 8")]
    #[test_case::test_case("[::1]:7001", "[::1]:7101" ; "v6 loopback")]
    fn loopback_node_needs_nothing(api: &str, raft: &str) {
        assert_eq!(gaps(api, raft, ""), Vec::<String>::new());
    }

    #[test_case::test_case("10.0.0.1:7001", "127.0.0.1:7101" ; "api exposed")]
    #[test_case::test_case("127.0.0.1:7001", "10.0.0.1:7101" ; "raft exposed")]
    #[test_case::test_case("[fd00::1]:7001", "[::1]:7101" ; "v6 api exposed")]
    fn exposed_node_with_defaults_names_every_setting(api: &str, raft: &str) {
        let gaps = gaps(api, raft, "").join("\n");
        for setting in ["auth.enabled", "raft.secret", "tls.cert_file"] {
            assert!(gaps.contains(setting), "{gaps}");
        }
    }

    #[test]
    fn exposed_node_with_auth_secret_and_tls_is_safe() {
        assert_eq!(
            gaps("10.0.0.1:7001", "10.0.0.1:7101", SAFE),
            Vec::<String>::new()
        );
    }

    #[test]
    fn exposed_node_without_tls_names_only_tls() {
        let without_tls = SAFE.split("[tls]").next().unwrap();
        let gaps = gaps("10.0.0.1:7001", "10.0.0.1:7101", without_tls);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].starts_with("tls.cert_file"), "{gaps:?}");
    }
}
