//! A throwaway PostgreSQL cluster of a test's own (`initdb` and `pg_ctl` on
//! a temporary directory and a free port), for the tests that stop or
//! restart the server, which the shared one must never be.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A cluster of its own, stopped and removed when this is dropped.
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run as the `postgres` user: `initdb` and `postgres` refuse root.
    as_postgres: bool,
    /// Its URL (user `postgres`, trust authentication).
    pub url: String,
}

impl Cluster {
    /// A new cluster, started; `None` (said loudly) when PostgreSQL's
    /// server programs are not installed and the tests may skip (never in
    /// CI: `scripts/postgres` installs them).
    pub fn start() -> Option<Cluster> {
        let Some(bin) = server_programs() else {
            if super::required() {
                panic!(
                    "no `initdb` under /usr/lib/postgresql for a throwaway cluster; CI never skips"
                );
            }
            eprintln!(
                "\n*** SKIPPED: no `initdb` under /usr/lib/postgresql for a throwaway cluster ***\n"
            );
            return None;
        };
        // Free now; another process taking it before the server does makes
        // the start fail loudly.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let data =
            std::env::temp_dir().join(format!("tokenledger-cluster-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        // Made by this process, so owned by its user.
        let as_postgres =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data).unwrap()) == 0;
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(&data));
        }
        let cluster = Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            port,
            as_postgres,
        };
        run(cluster
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&cluster.data));
        cluster.start_again();
        Some(cluster)
    }

    /// Starts it again after [`Cluster::stop`].
    pub fn start_again(&self) {
        let options = format!("-h 127.0.0.1 -p {} -k {}", self.port, self.data.display());
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("log"))
            .args(["-w", "-o", &options, "start"]));
    }

    /// Stops it at once, as a crash would (`-m immediate`): connections are
    /// cut, and the next start recovers from the write-ahead log.
    pub fn stop(&self) {
        run(self.command("pg_ctl").arg("-D").arg(&self.data).args([
            "-w",
            "-m",
            "immediate",
            "stop",
        ]));
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The newest installed server's programs, if any.
fn server_programs() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|bin| version_of(bin));
    versions.pop()
}

fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str()?.parse().ok())
        .unwrap_or(0)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
