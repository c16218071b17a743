//! The `baton` binary: server and command-line tools.

fn main() -> std::process::ExitCode {
    baton::cli::run()
}
