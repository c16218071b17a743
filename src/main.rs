//! The `baton` binary: server and command-line tools.

/// mimalloc, not glibc's malloc: the server allocates on every request from many
/// threads, where glibc's arenas cost a fifth of a leader's CPU at 64 connections
/// (profiled with perf; see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    baton::cli::run()
}
