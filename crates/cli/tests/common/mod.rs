//! Running the `tokenledger` binary from a test: a command that ignores the
//! caller's environment, what a run printed and how it ended, and key files
//! kept as an operator should keep them.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// How a run of the binary ended, and what it printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} / {:?}", self.stdout, self.stderr))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

/// The binary, blind to the variables that would otherwise choose its data
/// directory, its keys and the head it expects.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .env_remove("TOKENLEDGER_DATA")
        .env_remove("TOKENLEDGER_SEALING_KEY_FILE")
        .env_remove("TOKENLEDGER_CHECKPOINT_KEY_FILE")
        .env_remove("TOKENLEDGER_KNOWN_HEAD");
    command
}

/// Runs `command` with `stdin` on standard input.
pub fn finish(mut command: Command, stdin: Option<&str>) -> Run {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command refused before it reads its input closes the pipe.
        match input.write_all(text.as_bytes()) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
    }
    drop(input);
    Run::from(child.wait_with_output().unwrap())
}

/// A key file as an operator should keep it: readable by its owner only
/// (else the command warns).
pub fn write_key(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Adds `--json` to `args`, runs them with `run`, and returns the JSON they
/// print; they must succeed, silently on standard error.
pub fn json_ok(args: &[&str], run: impl FnOnce(&[&str]) -> Run) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = run(&all);
    assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
    run.json()
}

/// The arguments that create Acme.
pub const CREATE_ACME: [&str; 4] = ["company", "create", "--name", "Acme"];

/// The arguments that add Ada, an admin, to `company`.
pub fn add_ada(company: &str) -> [&str; 9] {
    [
        "teammate",
        "add",
        "--company",
        company,
        "--name",
        "Ada",
        "--admin",
        "--by",
        "system",
    ]
}

/// The arguments by which `admin` creates "Plugin", an API token of
/// `company` with `scope` on resources in the global namespace.
pub fn create_plugin<'a>(company: &'a str, admin: &'a str, scope: &'a str) -> [&'a str; 13] {
    [
        "token",
        "create",
        "--company",
        company,
        "--name",
        "Plugin",
        "--by",
        admin,
        "--feature",
        "resources",
        "--global",
        "--scope",
        scope,
    ]
}
