//! The listener: accepts connections until told to stop, then stops
//! accepting, lets every request in flight finish (up to a grace period),
//! and returns, so the caller can close the ledger.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokenledger_authz::Ledger;
use tokio::net::TcpListener;

use crate::keys::ServiceKeys;
use crate::routes::{Limits, build};
use crate::tls::TlsAcceptor;

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Binds `listen` and builds the routes over `ledger`; with `tls`, every
    /// connection is TLS.
    pub async fn bind(
        listen: SocketAddr,
        ledger: Arc<Ledger>,
        keys: ServiceKeys,
        limits: Limits,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(listen).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Server {
            listener,
            router: build(ledger, keys, limits, scheme),
            limits,
            tls,
        })
    }

    /// Where it listens (the port chosen, for `:0`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and waits
    /// for the requests in flight (up to the grace period). Returns
    /// whether every connection finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(self.router.clone());
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.limits.idle_timeout)
                .keep_alive(true);
            match &self.tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(connection);
                }
                Some(tls) => {
                    let (tls, idle) = (tls.clone(), self.limits.idle_timeout);
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let Ok(Ok(stream)) = tokio::time::timeout(idle, tls.accept(stream)).await
                        else {
                            return;
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    });
                }
            }
        }
        drop(self.listener);
        tokio::time::timeout(self.limits.shutdown_grace, graceful.shutdown())
            .await
            .is_ok()
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server would run unstoppable by
        // SIGTERM's clean path; never start it so.
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
