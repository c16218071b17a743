//! Other systems' APIs, translated to Baton's commands: never their own lock rules.
//!
//! [`tracker`] serves Tracker's REST API (`/api/v1alpha1`) on top of the replicated
//! lock table, so Tracker's scripts run unchanged.

pub mod tracker;
