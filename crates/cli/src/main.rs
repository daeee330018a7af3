//! `tokenledger`: the command line for operators and investigators.
//!
//! Exit codes: 0 done (or allowed), 1 refused or a failed check, 2 bad
//! input. Errors are one line on standard error, and a command that fails
//! writes nothing: input is parsed before the data directory is opened, and
//! the ledger records a command only once the rules accept it.
//!
//! Before anything is read the process is made non-dumpable and its umask
//! set to `077` (`harden.rs`), and an argument holding a secret is refused
//! (`guard.rs`). Commands that only read refuse a directory that holds no
//! ledger; only `company create`, `import` and `demo` start one.

mod args;
mod demo;
mod files;
mod guard;
mod harden;
mod investigate;
mod keyfiles;
mod output;
mod progress;
mod run;
mod serve;

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

/// Prints why a command failed, on one line, with any secret cut out.
fn report(message: &str) {
    eprintln!("tokenledger: {}", guard::redact(message));
}

fn main() -> ExitCode {
    let checked =
        harden::harden().and_then(|()| guard::refuse_secret_arguments(std::env::args_os().skip(1)));
    if let Err(failure) = checked {
        report(failure.message());
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
                    report(first.trim_start_matches("error: "));
                    ExitCode::from(2)
                }
            };
        }
    };
    match run::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            report(failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}
