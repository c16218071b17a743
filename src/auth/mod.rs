//! Access control: applications, their API keys and their permissions on key prefixes
//! ([`keys`]), the store that reloads the keys file ([`store`]), and the identity a
//! follower passes to the leader with a relayed request ([`relayed`]).
//!
//! No HTTP types here: `api::auth` reads the headers and maps refusals to answers, and
//! any other front end (a compat API) can do the same with
//! [`store::KeyStore::authenticate`] and [`keys::Principal::allows`].
//!
//! # Caveats
//! - A key is as secret as the channel it travels on: without TLS it crosses the
//!   network in the clear.
//! - A relayed identity can be replayed for [`relayed::MAX_SKEW_MS`] by someone who can
//!   read node-to-node traffic; every write is idempotent, and TLS closes that gap.

pub mod keys;
pub mod relayed;
pub mod store;

pub use keys::{Permission, Principal, Rule};
pub use store::KeyStore;
