//! The wire contract of the v1 HTTP API: every request and response body, the error
//! codes, the time format and how an endpoint is written. Declared once, here, and used
//! by both sides — the server ([`crate::api`]), the Rust client ([`crate::client`]), the
//! CLI, the benchmark and the chaos workload — so that they cannot drift apart.
//!
//! Rules this module keeps:
//! - Every type is `Serialize + Deserialize`; what the server sends is what the client
//!   reads. Fields the server leaves out when absent are `Option`s with
//!   `skip_serializing_if`, and the client accepts them missing.
//! - Request bodies deny unknown fields (a typo is an `INVALID_REQUEST`, not ignored).
//! - Times are RFC 3339 UTC strings with milliseconds ([`rfc3339_ms`]); durations are
//!   integer milliseconds named `*_ms`.
//! - Conversions from the lock state machine's domain types ([`crate::locks`]) live
//!   beside the types they produce, so the in-memory double ([`crate::client::MemoryLocks`])
//!   answers exactly as a node does.
//!
//! It deliberately knows no HTTP library: statuses are plain `u16`s, and the mapping of
//! errors to statuses stays in `api::problem`.

mod cluster;
mod endpoint;
mod error;
mod locks;
mod time;

pub use cluster::{
    AddNodeRequest, ClusterView, Health, MemberView, MembershipAnswer, MembershipChangeView,
    PeerView, QuorumView, Readiness, Role, BACKUP_PATH,
};
pub use endpoint::{
    endpoint_authority, endpoint_url, parse_endpoint, EndpointError, CLIENT_IDLE_REUSE,
};
pub use error::{ErrorCode, Problem};
pub use locks::{
    check_key, AcquireRequest, CancelReason, CancelRequest, Cancelled, Consistency, EventKind,
    EventsQuery, FeedQuery, Lease, ListQuery, LockEvent, LockInfo, LockPage, NotReleased,
    ReadQuery, ReleaseRequest, Released, RenewRequest, StreamReset, ValidateRequest, Validation,
    WaiterInfo,
};
pub use time::{parse_rfc3339_ms, rfc3339_ms, TimeError};
