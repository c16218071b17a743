//! `baton keys create NAME --allow PERMISSION=PREFIX …`: a new API key for an
//! application, and its line for the keys file.
//!
//! The key is printed once, on the first line of stdout; the second line is what to
//! append to the keys file (it holds the key's SHA-256, never the key). A note on
//! stderr says so, so `baton keys create … > out` keeps stdout to the two lines.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::auth::keys::{keys_file_line, new_key, Rule};
use crate::locks::AppName;

/// `baton keys …`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Subcommands of `baton keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random API key (once) and its keys-file line.
    Create {
        /// Application name: 1 to 64 bytes of [A-Za-z0-9._-].
        #[arg(value_parser = parse_app)]
        name: AppName,
        /// A permission on a key prefix: lock=PREFIX, read=PREFIX or admin=PREFIX
        /// (`*`: every key); repeat for more.
        #[arg(long = "allow", required = true, value_name = "PERMISSION=PREFIX", value_parser = Rule::parse)]
        allow: Vec<Rule>,
    },
}

fn parse_app(s: &str) -> Result<AppName, String> {
    AppName::parse(s).map_err(|e| e.to_string())
}

/// Runs `baton keys`.
pub fn run(args: KeysArgs) -> ExitCode {
    match args.command {
        KeysCommand::Create { name, allow } => {
            let key = new_key();
            println!("{key}");
            println!("{}", keys_file_line(&name, &key, &allow));
            eprintln!(
                "# line 1 is {name}'s API key, shown only now; line 2 goes into the keys file"
            );
            ExitCode::SUCCESS
        }
    }
}
