//! Connecting: the URL parsed once, every connection bounded in time, and
//! errors that name the server but never the password.

use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, Config, NoTls};

use crate::{OpenError, Options};

/// The parsed URL with the timeouts applied, and the server it names.
#[derive(Clone)]
pub(crate) struct Server {
    config: Config,
    endpoint: String,
    connect_timeout: Duration,
}

impl Server {
    /// Parses `url` (`postgres://USER@HOST:PORT/DB`, or key=value pairs)
    /// and bounds every connection made from it: the connection itself,
    /// each statement (on the server), and a peer that stops answering
    /// (TCP keepalives and the user timeout, on the client).
    pub(crate) fn parse(url: &str, options: &Options) -> Result<Server, OpenError> {
        // The parser's error does not echo the text; ours never does
        // either, since the text may hold a password.
        let mut config = Config::from_str(url).map_err(|_| OpenError::Url)?;
        if config.get_hosts().is_empty() {
            return Err(OpenError::Url);
        }
        // libpq's convention, which the client does not follow itself: a
        // password kept out of the URL, and so out of the process list.
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        let statement_ms = options.statement_timeout.as_millis();
        config
            .connect_timeout(options.connect_timeout)
            .tcp_user_timeout(options.statement_timeout + Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .options(&format!("-c statement_timeout={statement_ms}"));
        let endpoint = endpoint(&config);
        Ok(Server {
            config,
            endpoint,
            connect_timeout: options.connect_timeout,
        })
    }

    /// `HOST:PORT`, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A new connection.
    pub(crate) fn connect(&self) -> Result<Client, OpenError> {
        self.connect_named("tokenledger")
    }

    /// A new connection that `pg_stat_activity` shows as `name`.
    ///
    /// The client bounds only the socket's connection by its timeout, not
    /// the startup after it: a server that accepts and never answers (a
    /// stopped postmaster whose kernel still accepts) would hold the
    /// caller for ever. So the connection is made on a thread of its own,
    /// and given up on after `connect_timeout`; that thread ends when the
    /// server answers or the socket fails.
    pub(crate) fn connect_named(&self, name: &str) -> Result<Client, OpenError> {
        let mut config = self.config.clone();
        config.application_name(name);
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let failed = |detail: String| OpenError::Connect {
            endpoint: self.endpoint.clone(),
            detail,
        };
        std::thread::Builder::new()
            .name("tokenledger-pg-connect".to_owned())
            .spawn(move || {
                let _ = sender.send(config.connect(NoTls));
            })
            .map_err(|error| failed(format!("no thread could be started: {error}")))?;
        match receiver.recv_timeout(self.connect_timeout) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(failed(describe(&error))),
            Err(_) => Err(failed(format!(
                "no answer within {} ms",
                self.connect_timeout.as_millis()
            ))),
        }
    }
}

fn endpoint(config: &Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => format!("{host}:{port}"),
        Some(Host::Unix(path)) => format!("{}:{port}", path.display()),
        None => format!("localhost:{port}"),
    }
}

/// An error and its causes on one line: the client's own text says only
/// "db error" or "error connecting to server".
pub(crate) fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A statement failed on the server, or answered what it cannot have (a
/// row missing, a value that does not convert): both refuse, since what
/// the answer would have said is not known.
#[derive(Debug)]
pub(crate) enum Fault {
    Server(postgres::Error),
    Malformed(String),
}

impl From<postgres::Error> for Fault {
    fn from(error: postgres::Error) -> Fault {
        Fault::Server(error)
    }
}

impl Fault {
    /// The fault on one line.
    pub(crate) fn describe(&self) -> String {
        match self {
            Fault::Server(error) => describe(error),
            Fault::Malformed(what) => format!("unexpected answer: {what}"),
        }
    }
}
