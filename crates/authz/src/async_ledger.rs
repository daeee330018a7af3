//! The ledger for a service on tokio (the `tokio` feature): every call that
//! may wait for the disk, or walk the log, runs on the runtime's blocking
//! pool, so no runtime worker ever waits for an `fsync`; waiting for a
//! position waits on a watch, holding no thread. Commands sent at once from
//! many tasks are still decided in order and share the log's syncs
//! ([`Ledger::execute`]). The [`Authorizer`] never blocks: use it as it is.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_events::{Actor, Scope, Secret, Timestamp, TokenId};
use tokenledger_store::{StoredEvent, Verified};

use crate::authorizer::Authorizer;
use crate::command::Command;
use crate::decision::Location;
use crate::history::HistoryQuery;
use crate::idempotency::IdempotencyKey;
use crate::investigate::{Timeline, WhoCan};
use crate::ledger::{CreatedToken, Health, Ledger, LedgerError, NewToken, Receipt};
use crate::transfer::TransferError;

/// A [`Ledger`] shared by the tasks of a tokio runtime; cheap to clone.
///
/// Each method is its blocking namesake run with `spawn_blocking`; it must
/// be called from within a runtime (one with its time driver enabled for
/// [`AsyncLedger::wait_for_position`]).
#[derive(Clone)]
pub struct AsyncLedger {
    ledger: Arc<Ledger>,
}

impl AsyncLedger {
    /// Shares `ledger` with the runtime's tasks.
    pub fn new(ledger: Arc<Ledger>) -> AsyncLedger {
        AsyncLedger { ledger }
    }

    /// The ledger itself, for what never blocks (its state, whether it is
    /// closed) and to hand to the blocking pool. Not for its head or its
    /// health, nor anything else that reads the log: on PostgreSQL each
    /// is a query through a blocking client, which must not run on a
    /// runtime worker ([`AsyncLedger::health`]).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The hot path's handle; it never blocks.
    pub fn authorizer(&self) -> Authorizer {
        self.ledger.authorizer()
    }

    /// Runs `work` on the blocking pool. A panic in it is resumed here; a
    /// runtime shutting down before it ran is an error (nothing was done).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Ledger) -> T + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = Arc::clone(&self.ledger);
        match tokio::task::spawn_blocking(move || work(&ledger)).await {
            Ok(answer) => Ok(answer),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(LedgerError::Unanswered(format!(
                "the runtime stopped before the call ran: {error}"
            ))),
        }
    }

    /// [`Ledger::health`]: it reads the log's head.
    pub async fn health(&self) -> Result<Health, LedgerError> {
        self.blocking(Ledger::health).await
    }

    /// [`Ledger::execute`].
    pub async fn execute(&self, actor: Actor, command: Command) -> Result<Receipt, LedgerError> {
        self.blocking(move |ledger| ledger.execute(actor, command))
            .await?
    }

    /// [`Ledger::create_token`].
    pub async fn create_token(
        &self,
        actor: Actor,
        new: NewToken,
    ) -> Result<CreatedToken, LedgerError> {
        self.blocking(move |ledger| ledger.create_token(actor, new))
            .await?
    }

    /// [`Ledger::execute_once`].
    pub async fn execute_once(
        &self,
        actor: Actor,
        command: Command,
        key: IdempotencyKey,
    ) -> Result<Receipt, LedgerError> {
        self.blocking(move |ledger| ledger.execute_once(actor, command, key))
            .await?
    }

    /// [`Ledger::create_token_once`].
    pub async fn create_token_once(
        &self,
        actor: Actor,
        new: NewToken,
        key: IdempotencyKey,
    ) -> Result<CreatedToken, LedgerError> {
        self.blocking(move |ledger| ledger.create_token_once(actor, new, key))
            .await?
    }

    /// [`Ledger::reveal`].
    pub async fn reveal(&self, actor: Actor, token: TokenId) -> Result<Secret, LedgerError> {
        self.blocking(move |ledger| ledger.reveal(actor, token))
            .await?
    }

    /// [`Ledger::history`].
    pub async fn history(&self, query: HistoryQuery) -> Result<Vec<StoredEvent>, LedgerError> {
        self.blocking(move |ledger| ledger.history(&query)).await?
    }

    /// [`Ledger::timeline`].
    pub async fn timeline(
        &self,
        token: TokenId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Timeline, LedgerError> {
        self.blocking(move |ledger| ledger.timeline(token, since, until))
            .await?
    }

    /// [`Ledger::who_can`].
    pub async fn who_can(
        &self,
        scope: Scope,
        location: Location,
        at: Timestamp,
    ) -> Result<WhoCan, LedgerError> {
        self.blocking(move |ledger| ledger.who_can(scope, location, at))
            .await?
    }

    /// [`Ledger::verify`]; a damaged log is [`LedgerError::Damaged`].
    pub async fn verify(&self) -> Result<Verified, LedgerError> {
        self.blocking(|ledger| ledger.verify().map_err(LedgerError::Damaged))
            .await?
    }

    /// [`Ledger::export`] to a new file at `path` (which must not exist);
    /// returns how many events were written.
    pub async fn export(&self, path: PathBuf) -> Result<u64, TransferError> {
        self.blocking(move |ledger| {
            let file = File::create_new(&path).map_err(|error| TransferError::Io {
                path: path.clone(),
                error,
            })?;
            let mut out = BufWriter::new(file);
            let count = ledger.export(&mut out, &path, &mut |_, _| {})?;
            let file = out.into_inner().map_err(|error| TransferError::Io {
                path: path.clone(),
                error: error.into_error(),
            })?;
            file.sync_all().map_err(|error| TransferError::Io {
                path: path.clone(),
                error,
            })?;
            Ok(count)
        })
        .await
        .map_err(TransferError::Ledger)?
    }

    /// [`Ledger::wait_for_position`], waiting on a watch of the applied
    /// position: no thread is held while it waits.
    pub async fn wait_for_position(
        &self,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, LedgerError> {
        let ledger = &self.ledger;
        let mut applied = ledger.applied_watch();
        let wait = applied.wait_for(|now| *now >= position || ledger.refuse_if_closed().is_err());
        // Whether it ended or timed out, the answer is read afresh below.
        let _ = tokio::time::timeout(timeout, wait).await;
        ledger.refuse_if_closed()?;
        let now = *applied.borrow();
        if now >= position {
            return Ok(now);
        }
        // Off the runtime's workers: the log's head may be a query.
        Err(self
            .blocking(move |ledger| ledger.not_applied(position, now))
            .await?)
    }
}
