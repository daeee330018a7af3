//! Replicas of a ledger on PostgreSQL, each a process of its own: the test
//! binary run again as one of its tests, answering on standard output.

use std::io::BufRead;
use std::time::Duration;

use tokenledger_authz::{Ledger, LedgerOptions};
use tokenledger_events::Timestamp;
use tokenledger_tests::model::*;

/// Each replica process's lease.
pub const LEASE: Duration = Duration::from_secs(1);

/// Set in a replica's process: the database, and the seed of its sequence.
const REPLICA_URL: &str = "TOKENLEDGER_MODEL_REPLICA_URL";
const REPLICA_SEED: &str = "TOKENLEDGER_MODEL_REPLICA_SEED";

/// A replica process: this test binary run again, as its test `name`,
/// with the database and seed in its environment. Its answers on standard
/// output follow an `@`; libtest's own lines are skipped.
pub struct Process {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: std::io::BufReader<std::process::ChildStdout>,
}

impl Process {
    /// Starts the test `name` of this binary as a replica of `url`.
    pub fn start(name: &str, url: &str, seed: u64) -> Process {
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads", "1"])
            .env(REPLICA_URL, url)
            .env(REPLICA_SEED, seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let from = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut process = Process { child, to, from };
        assert_eq!(process.answer(), "ready");
        process
    }

    fn answer(&mut self) -> String {
        loop {
            let mut line = String::new();
            assert_ne!(
                self.from.read_line(&mut line).unwrap(),
                0,
                "the replica ended"
            );
            // libtest's "test replica_process ... " may begin the line.
            if let Some((_, answer)) = line.trim_end().split_once('@') {
                return answer.to_owned();
            }
        }
    }

    /// Sends the process `signal` (`STOP`, `CONT`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    /// Asks `question`, and returns the answer.
    pub fn ask(&mut self, question: &str) -> String {
        use std::io::Write;
        writeln!(self.to, "{question}").unwrap();
        self.answer()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        use std::io::Write;
        // A test that failed while its replica was stopped (SIGSTOP) must
        // not hang waiting for it.
        let _ = std::process::Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = writeln!(self.to, "quit");
        let _ = self.child.wait();
    }
}

/// Replica processes, as the model drives them.
pub struct Processes(pub Vec<Process>);

impl Replicas for Processes {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn execute(
        &mut self,
        on: usize,
        step: usize,
        actor: usize,
        now: tokenledger_events::Timestamp,
        wait: u64,
    ) -> Result<u64, String> {
        let answer = self.0[on].ask(&format!("exec {step} {actor} {} {wait}", now.as_micros()));
        match answer.strip_prefix("ok ") {
            Some(position) => Ok(position.parse().unwrap()),
            None => Err(answer),
        }
    }

    fn check(
        &mut self,
        on: usize,
        check: &Check,
        (namespace, at): (u8, usize),
        now: tokenledger_events::Timestamp,
        wait: Option<u64>,
    ) -> (Verdict, u64) {
        let presented = match check.presented {
            Presented::Token(k) => format!("t{k}"),
            Presented::Garbage => "g".to_owned(),
            Presented::UnknownSecret => "u".to_owned(),
        };
        let scope = check.scope.map_or("-".to_owned(), |s| s.to_string());
        let answer = self.0[on].ask(&format!(
            "check {presented} {scope} {namespace} {at} {} {}",
            now.as_micros(),
            wait.unwrap_or(0)
        ));
        let mut words = answer.split(' ');
        let (verdict, position, status) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        let verdict: u8 = verdict.parse().unwrap();
        let verdict = match (verdict, status) {
            (_, "503") => Err(UNAVAILABLE),
            (0, _) => Ok(()),
            (rule, _) => Err(rule),
        };
        (verdict, position.parse().unwrap())
    }
}

/// What a replica process was started with, if this is one: the
/// database, and the seed of its sequence.
pub fn asked() -> Option<(String, u64)> {
    let url = std::env::var(REPLICA_URL).ok()?;
    let seed = std::env::var(REPLICA_SEED).ok()?.parse().ok()?;
    Some((url, seed))
}

/// Serves as a replica of the ledger in `url` until told to quit: runs
/// `steps`' commands and decides requests, as [`Process`] asks. Its lease
/// lasts [`LEASE`].
pub fn serve(url: &str, steps: &[(Who, Op)]) {
    let options = LedgerOptions {
        replica_lease: LEASE,
        checkpoint_every: 0,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_postgres(url, None, options).unwrap();
    let authorizer = ledger.authorizer();
    println!("@ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        let number = |i: usize| words[i].parse::<u64>().unwrap();
        match words[0] {
            "exec" => {
                let op = &steps[number(1) as usize].1;
                let now = Timestamp::from_micros(number(3));
                ledger
                    .wait_for_position(number(4), Duration::from_secs(10))
                    .unwrap();
                match ledger.execute(actor(number(2) as usize), command(op, now)) {
                    Ok(receipt) => println!("@ok {}", receipt.position()),
                    Err(error) => println!("@refused {}", error.to_string().replace('\n', " ")),
                }
            }
            "check" => {
                let presented = match words[1] {
                    "g" => Presented::Garbage,
                    "u" => Presented::UnknownSecret,
                    k => Presented::Token(k[1..].parse().unwrap()),
                };
                let check = Check {
                    presented,
                    scope: words[2].parse().ok(),
                    namespace: 0,
                    at: 0,
                    own_company: false,
                };
                let location = (number(3) as u8, number(4) as usize);
                let now = Timestamp::from_micros(number(5));
                let wait = number(6);
                if wait > 0 {
                    ledger
                        .wait_for_position(wait, Duration::from_secs(10))
                        .unwrap();
                    // Caught up includes holding a lease: one that lapsed
                    // under a loaded machine refuses everything until then.
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !ledger.health().ready && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                let (secret, request) = request_for(&check, location, now);
                let decision = authorizer.check(&secret, &request);
                // The status tells a lapsed lease (503) from the rule's own
                // refusal, which share the rule's number.
                let status = decision.status();
                let verdict = decision.refusal.map_or(0, |r| r.rule.number());
                println!("@{verdict} {} {status}", decision.position);
            }
            "verify" => match ledger.verify() {
                Ok(verified) => println!("@ok {verified:?}"),
                Err(damage) => println!("@damaged {damage}"),
            },
            _ => break,
        }
    }
}
