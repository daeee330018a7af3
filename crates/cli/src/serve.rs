//! `tokenledger serve`: opens the ledger, serves it over HTTP until SIGTERM
//! or SIGINT, lets the requests in flight finish, and closes the ledger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenledger_serve::{Limits, Server, ServiceKeys, acceptor, shutdown_signal};

use crate::Failure;
use crate::args::ServeArgs;
use crate::keyfiles;
use crate::run::{Context, database_url, open};

pub fn run(context: &Context, args: ServeArgs) -> Result<u8, Failure> {
    let files = [
        ("check key", Some(&args.check_key_file)),
        ("admin key", Some(&args.admin_key_file)),
        ("TLS key", args.tls_key.as_ref()),
    ];
    for (what, path) in files {
        if let Some(path) = path {
            // A database has no directory for a key to hide in.
            if database_url(context).is_none() {
                keyfiles::refuse_inside(what, path, &context.data)?;
            }
            keyfiles::warn_if_shared(what, path);
        }
    }
    let keys = ServiceKeys::from_files(&args.check_key_file, &args.admin_key_file)
        .map_err(|e| Failure::BadInput(e.to_string()))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(acceptor(cert, key).map_err(|e| Failure::BadInput(format!("TLS: {e}")))?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ledger = open(context)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Refused(format!("the async runtime: {e}")))?;
    let limits = Limits::default();
    let served = runtime.block_on(async {
        let server = Server::bind(args.listen, Arc::clone(&ledger), keys, limits, tls)
            .await
            .map_err(|e| Failure::BadInput(format!("--listen {}: {e}", args.listen)))?;
        let bound = server.local_addr().unwrap_or(args.listen);
        // A database URL may hold a password: it is not printed.
        let data = match database_url(context) {
            Some(_) => "the PostgreSQL database".to_owned(),
            None => context.data.display().to_string(),
        };
        eprintln!("tokenledger: serving {data} on {scheme}://{bound}");
        Ok::<_, Failure>(server.run(shutdown_signal()).await)
    })?;
    // Tasks still holding the ledger (a command past the grace period)
    // end with the runtime; then the ledger is the last copy, closed here.
    runtime.shutdown_timeout(limits.shutdown_grace);
    match last_copy(ledger, LAST_COPY_WAIT) {
        Ok(ledger) => drop(ledger),
        Err(_) => {
            return Err(Failure::Refused(
                "stopped, but a request still held the ledger: it closes as the process exits"
                    .to_owned(),
            ));
        }
    }
    if !served {
        return Err(Failure::Refused(
            "stopped, but some connections had not finished within the grace period".to_owned(),
        ));
    }
    eprintln!("tokenledger: stopped; the ledger is closed");
    Ok(0)
}

/// How long the follower may still hold the ledger once the runtime is
/// down: on PostgreSQL its thread holds it, briefly, while it applies what
/// other processes appended or renews the lease (a synchronous `COMMIT`),
/// and lets it go when done; it never holds it longer than one of those.
const LAST_COPY_WAIT: Duration = Duration::from_secs(5);

/// `shared` itself once no other copy of it is left, waiting up to
/// `within` for the others to go; else `shared` back.
fn last_copy<T>(mut shared: Arc<T>, within: Duration) -> Result<T, Arc<T>> {
    let deadline = Instant::now() + within;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(last) => return Ok(last),
            Err(still) if Instant::now() < deadline => {
                shared = still;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(still) => return Err(still),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_copy_is_taken_once_a_brief_holder_lets_go() {
        let shared = Arc::new(7);
        let held = Arc::clone(&shared);
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        assert_eq!(last_copy(shared, Duration::from_secs(5)), Ok(7));
        holder.join().unwrap();
    }

    #[test]
    fn a_copy_held_past_the_wait_is_given_back() {
        let shared = Arc::new(7);
        let _held = Arc::clone(&shared);
        let started = Instant::now();
        let back = last_copy(shared, Duration::from_millis(40)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(Arc::strong_count(&back), 2);
    }
}
