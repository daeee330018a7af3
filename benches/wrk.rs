//! wrk (Debian's package) as the load generator of the HTTP benches: a
//! process of its own, so the load it makes is not scheduled among the
//! server's tasks as an in-process client's is.
//!
//! The request goes to wrk in a Lua script, written to a private temporary
//! file, not on its command line: the benches' bearer keys and secrets are
//! throwaway ones, but nothing here puts a secret where `ps` shows it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// One request, sent again and again.
pub struct Load {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What wrk measured.
pub struct Measured {
    pub per_second: f64,
    pub p99: Duration,
}

/// Whether wrk is installed.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("wrk"))
}

/// A Lua string literal of `bytes`, every byte escaped, so no byte of a
/// body or header can end it.
fn lua_string(bytes: &[u8]) -> String {
    let mut literal = String::with_capacity(bytes.len() * 4 + 2);
    literal.push('"');
    for byte in bytes {
        let _ = write!(literal, "\\{byte:03}");
    }
    literal.push('"');
    literal
}

/// Sends `load` to `addr` for `seconds` from wrk's `threads` threads over
/// `connections` connections kept alive. Every answer must be 2xx.
pub fn run(
    addr: SocketAddr,
    load: &Load,
    seconds: Duration,
    threads: usize,
    connections: usize,
) -> Result<Measured, String> {
    let mut script = format!(
        "wrk.method = {}\nwrk.body = {}\n",
        lua_string(load.method.as_bytes()),
        lua_string(&load.body)
    );
    for (name, value) in &load.headers {
        let _ = writeln!(
            script,
            "wrk.headers[{}] = {}",
            lua_string(name.as_bytes()),
            lua_string(value.as_bytes())
        );
    }
    let mut file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    file.write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", seconds.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(file.path())
        .arg(format!("http://{addr}{}", load.path))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed: {text}"));
    }
    // wrk prints these lines only when something went wrong: a run with
    // errors or timeouts is no figure, as an answer other than 200 ends
    // the in-process client's.
    for wrong in ["Non-2xx", "Socket errors"] {
        if let Some(line) = text.lines().find(|l| l.contains(wrong)) {
            return Err(format!("wrk: {}", line.trim()));
        }
    }
    let per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no requests per second in wrk's output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|n| duration(n.trim()))
        .ok_or_else(|| format!("no 99th percentile in wrk's output: {text}"))?;
    Ok(Measured { per_second, p99 })
}

/// One of wrk's latencies: `812.00us`, `9.70ms`, `1.02s`.
fn duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(value * scale))
}
