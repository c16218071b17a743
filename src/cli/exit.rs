//! Exit codes of the client commands (`baton lock`, `acquire`, `renew`, …), listed in
//! `baton --help` and the README. `baton lock` otherwise exits with its command's code.

use crate::client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// Any other error (bad arguments, a refused request, an unexpected answer).
pub const ERROR: u8 = 1;
/// `get`: the key has no live lock; `validate`: the token is not the holder.
pub const NO: u8 = 3;
/// No node gave an answer in time (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// The lock is held by someone else, or the wait in its queue ran out (EX_TEMPFAIL).
pub const NOT_ACQUIRED: u8 = 75;
/// The lock was lost: a renewal was refused or the lease's safe deadline came.
pub const LOCK_LOST: u8 = 76;
/// `baton lock`: the command could not be started (as a shell's 127 "not found").
pub const CANNOT_RUN: u8 = 127;

/// The text for `--help`.
pub const HELP: &str =
    "Exit codes: 0 ok; 1 error; 3 no such lock (get) / token not valid (validate); \
69 no node answered; 75 lock held or wait timed out (not acquired); 76 lock lost; \
127 command could not be run. `baton lock` exits with its command's code (128+N for signal N).";

/// The exit code for a failed client call.
pub fn for_client_error(e: &ClientError) -> u8 {
    match e {
        ClientError::Held { .. } | ClientError::Unavailable(_) | ClientError::WaitTimeout(_) => {
            NOT_ACQUIRED
        }
        ClientError::Lost(_) => LOCK_LOST,
        ClientError::NoAnswer { .. } => UNAVAILABLE,
        ClientError::Rejected { .. } | ClientError::Config(_) => ERROR,
    }
}
