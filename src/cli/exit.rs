//! Exit codes of the client commands (`baton lock`, `acquire`, `renew`, …), listed in
//! `baton --help` and the README. `baton lock` otherwise exits with its command's code.

use crate::client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// An error: a refused request (`INVALID_REQUEST`, `NOT_OWNER`, …), an unexpected
/// answer, no endpoints to talk to.
pub const ERROR: u8 = 1;
/// Bad usage, found before anything is sent: an unknown option, a missing or malformed
/// argument (a bad duration or key, a token that is not a number). Clap's own code,
/// as for most command-line tools.
pub const USAGE: u8 = 2;
/// `get`: the key has no live lock; `validate`: the token is not the holder;
/// `release`: nothing was released under the token (the key is free, or held under
/// another token).
pub const NO: u8 = 3;
/// No node could serve in time (no leader, no quorum, nodes down; EX_UNAVAILABLE);
/// `status`: no node reports a leader with a quorum.
pub const UNAVAILABLE: u8 = 69;
/// The lock is held by someone else, or the wait in its queue ran out (EX_TEMPFAIL).
pub const NOT_ACQUIRED: u8 = 75;
/// The lock was lost: a renewal was refused or the lease's safe deadline came.
pub const LOCK_LOST: u8 = 76;
/// `baton lock`: the command could not be started (as a shell's 127 "not found").
pub const CANNOT_RUN: u8 = 127;

/// The text for `--help`.
pub const HELP: &str =
    "Exit codes: 0 ok; 1 error (a refused request); 2 bad usage (unknown option, malformed \
argument); 3 no (get: no lock; validate: token not the holder; release: nothing released); \
69 no node could serve in time (no leader, no quorum, nodes down); 75 lock held or wait timed \
out (not acquired); 76 lock lost; 127 command could not be run. `baton lock` exits with its \
command's code (128+N for signal N).";

/// The exit code for a failed client call.
pub fn for_client_error(e: &ClientError) -> u8 {
    match e {
        ClientError::Held { .. } | ClientError::Unavailable(_) | ClientError::WaitTimeout(_) => {
            NOT_ACQUIRED
        }
        ClientError::Lost(_) => LOCK_LOST,
        ClientError::NoAnswer { .. } => UNAVAILABLE,
        ClientError::Rejected { .. }
        | ClientError::UnexpectedAnswer { .. }
        | ClientError::Config(_) => ERROR,
    }
}
