//! The schema: created and migrated by the library, its version kept in a
//! table of its own, and a newer one refused.
//!
//! The SQL keeps to what CockroachDB also accepts where that costs
//! nothing: no advisory locks (migrations serialize on the version row,
//! locked `FOR UPDATE`), no PL/pgSQL. `pg_notify` is PostgreSQL's; a
//! server without it would lose only the wake-ups (see `watch.rs`).

use postgres::Client;
use tokenledger_store::GENESIS;

use crate::OpenError;
use crate::connect::describe;

/// The version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// Each migration takes the schema from its index to the next version.
const MIGRATIONS: [&str; 2] = [
    // 1: the log.
    "
    CREATE TABLE tokenledger_head (
        id smallint PRIMARY KEY CHECK (id = 0),
        position bigint NOT NULL,
        hash bytea NOT NULL,
        recorded_at bigint NOT NULL
    );
    CREATE TABLE tokenledger_events (
        position bigint PRIMARY KEY,
        event_id bytea NOT NULL UNIQUE,
        record bytea NOT NULL
    );
    CREATE TABLE tokenledger_streams (
        stream bytea NOT NULL,
        position bigint NOT NULL,
        PRIMARY KEY (stream, position)
    );
    CREATE INDEX tokenledger_streams_by_position ON tokenledger_streams (position);
",
    // 2: the replicas' leases (`lease.rs`). `expires_at` is the server's
    // clock, the only clock the leases compare; `owed` is the position a
    // removal waits for, which the lease may not be extended without.
    "
    CREATE TABLE tokenledger_leases (
        replica bytea PRIMARY KEY,
        applied bigint NOT NULL,
        owed bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
",
];

/// Creates or migrates the schema to [`SCHEMA_VERSION`]; refuses a newer
/// one. Several processes may open one database at once: each migration
/// runs in the transaction that holds the version row.
pub(crate) fn ensure(client: &mut Client, endpoint: &str) -> Result<(), OpenError> {
    let storage = |error: postgres::Error| OpenError::Storage {
        endpoint: endpoint.to_owned(),
        detail: describe(&error),
    };
    // Two processes creating the table at once may collide in the
    // catalog: the loser finds it made on its next try.
    let mut created = Ok(());
    for _ in 0..3 {
        created = client.batch_execute(
            "CREATE TABLE IF NOT EXISTS tokenledger_schema (
                 id smallint PRIMARY KEY CHECK (id = 0),
                 version integer NOT NULL
             );
             INSERT INTO tokenledger_schema (id, version) VALUES (0, 0)
                 ON CONFLICT (id) DO NOTHING;",
        );
        if created.is_ok() {
            break;
        }
    }
    created.map_err(storage)?;
    let mut transaction = client.transaction().map_err(storage)?;
    let row = transaction
        .query_one(
            "SELECT version FROM tokenledger_schema WHERE id = 0 FOR UPDATE",
            &[],
        )
        .map_err(storage)?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    let from = usize::try_from(found).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(from) {
        transaction.batch_execute(migration).map_err(storage)?;
    }
    if found == 0 {
        transaction
            .execute(
                "INSERT INTO tokenledger_head (id, position, hash, recorded_at)
                 VALUES (0, 0, $1, 0)",
                &[&GENESIS.as_slice()],
            )
            .map_err(storage)?;
    }
    if found < SCHEMA_VERSION {
        transaction
            .execute(
                "UPDATE tokenledger_schema SET version = $1 WHERE id = 0",
                &[&SCHEMA_VERSION],
            )
            .map_err(storage)?;
    }
    transaction.commit().map_err(storage)
}
