//! `tokenledger`: the command line for operators and investigators.
//!
//! Exit codes: 0 done (or allowed), 1 refused or a failed check, 2 bad
//! input. Errors are one line on standard error, and a command that fails
//! writes nothing: input is parsed before the data directory is opened, and
//! the ledger records a command only once the rules accept it.

mod args;
mod demo;
mod html;
mod output;
mod progress;
mod run;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::args::Cli;

/// Why a command did not do what was asked.
#[derive(Debug)]
pub enum Failure {
    /// The input is wrong: an unknown id, a bad scope, a missing argument,
    /// an unusable data directory. Exit 2.
    BadInput(String),
    /// The rules refused, or a check failed. Exit 1.
    Refused(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => 2,
            Failure::Refused(_) => 1,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::BadInput(message) | Failure::Refused(message) => message,
        }
    }
}

/// A secret on the command line ends up in shell history and in every
/// process listing, so an argument that is one (its checksum holds) is
/// refused before anything else is read.
fn refuse_secret_arguments() -> Result<(), Failure> {
    let is_secret = |text: &str| tokenledger_events::Secret::digest_of(text).is_ok();
    let found = std::env::args_os().skip(1).any(|arg| {
        let arg = arg.to_string_lossy();
        is_secret(&arg)
            || arg
                .split_once('=')
                .is_some_and(|(_, value)| is_secret(value))
    });
    if found {
        return Err(Failure::BadInput(
            "a secret is never taken from the command line: give it on standard input".to_owned(),
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(failure) = refuse_secret_arguments() {
        eprintln!("tokenledger: {}", failure.message());
        return ExitCode::from(failure.exit_code());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    print!("{error}");
                    ExitCode::SUCCESS
                }
                _ => {
                    // clap explains over several lines; the first says what was wrong.
                    let rendered = error.render().to_string();
                    let first = rendered.lines().next().unwrap_or("bad arguments");
                    eprintln!("tokenledger: {}", first.trim_start_matches("error: "));
                    ExitCode::from(2)
                }
            };
        }
    };
    match run::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("tokenledger: {}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}
