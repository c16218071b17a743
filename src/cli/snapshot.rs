//! `baton snapshot save FILE` and `baton snapshot restore FILE --config … --node N`:
//! backups of the lock table and new clusters started from them (`raft::backup`).
//!
//! `save` asks any node (it relays to the leader) for a backup at a linearizable point,
//! checks it as `restore` will, and writes it to a temporary file beside FILE, synced and
//! renamed, so FILE is either the whole backup or untouched. `restore` checks the file,
//! then builds node N's data dir (empty or absent; `--data-dir` or the config's) for a
//! new cluster; it runs offline, on each host, before the nodes are started.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{exit, ClientArgs};
use crate::config::Config;
use crate::raft::backup;
use crate::NodeId;

/// `baton snapshot …`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// Subcommands of `baton snapshot`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of every lock, taken at a linearizable point, to FILE (admin key).
    Save {
        /// Where to write the backup (replaced only once the whole backup is written).
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build a data dir for node N of a NEW cluster from a backup (offline, per host).
    Restore {
        /// The backup file (`baton snapshot save`).
        file: PathBuf,
        /// The new cluster's description.
        #[arg(long, env = "BATON_CONFIG", default_value = "cluster.toml")]
        config: PathBuf,
        /// The node to build the data dir of.
        #[arg(long, env = "BATON_NODE")]
        node: NodeId,
        /// Build this data dir instead of the config's data_dir.
        #[arg(long, env = "BATON_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Continue the log (and so fencing tokens) above this index, if higher than the
        /// backup's: the last index the old cluster reached when it went on after the
        /// backup. The same value on every node.
        #[arg(long, default_value_t = 0)]
        above: u64,
    },
}

/// Runs `baton snapshot`.
pub fn run(args: SnapshotArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = match args.command {
        SnapshotCommand::Save { file, client } => runtime.block_on(save(&file, &client)),
        SnapshotCommand::Restore {
            file,
            config,
            node,
            data_dir,
            above,
        } => runtime.block_on(restore(&file, &config, node, data_dir, above)),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<crate::client::ClientError>()
                .map_or(exit::ERROR, exit::for_client_error);
            ExitCode::from(code)
        }
    }
}

async fn save(file: &Path, client: &ClientArgs) -> anyhow::Result<()> {
    let bytes = client.connect()?.backup().await?;
    let backup = backup::decode(&bytes).context("the cluster sent a backup that does not check")?;
    let tmp = file.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    let h = &backup.header;
    println!(
        "saved {}: {} locks up to index {} (term {}), {} bytes, sha256 {}",
        file.display(),
        h.locks,
        h.index,
        h.term,
        bytes.len(),
        backup.checksum
    );
    Ok(())
}

async fn restore(
    file: &Path,
    config: &Path,
    node: NodeId,
    data_dir: Option<PathBuf>,
    above: u64,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let backup =
        backup::decode(&bytes).with_context(|| format!("{} is refused", file.display()))?;
    let config = Config::load(config, std::env::vars())?;
    let me = config.node(node)?;
    let dir = data_dir.unwrap_or_else(|| me.data_dir.clone());
    let restored = backup::restore(&backup, &config, node, &dir, above).await?;
    println!(
        "restored node {node} into {}: {} locks up to index {}; new cluster {}; tokens continue above {}",
        dir.display(),
        backup.header.locks,
        backup.header.index,
        restored.cluster_id,
        restored.index
    );
    Ok(())
}
