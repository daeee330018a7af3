//! The forum thread's 403, over HTTP: a small Front-like API behind
//! tokenledger's layer.
//!
//! A plugin's token has the Private namespace and `conversations:read`, yet
//! `GET /conversations/cnv_forum` (in Bob's private inbox) answers Front's
//! 403, because Bob's "Allow access to my individual resources via the
//! API" is off; the refusal's headers say the log position and the scope.
//! An admin turns the preference on for everyone, and the same request,
//! carrying the change's position as a consistency token, is allowed. The
//! token is deleted, and the very next request answers Front's 401.
//!
//! Run it with `cargo run -p tokenledger-tower --example front_api`. It
//! serves on a loopback port of its own, keeps its ledger in a temporary
//! directory, and prints each exchange (never the secret).

use std::error::Error;
use std::sync::Arc;

use tokenledger_authz::{Command, Ledger};
use tokenledger_events::Actor;
use tokenledger_tower::{
    ACCEPTED_SCOPE_HEADER, CONSISTENCY_HEADER, DEFAULT_CONSISTENCY_TIMEOUT, POSITION_HEADER,
};

mod app;
mod client;

use app::{Forum, Inboxes};
use client::{Answer, Api};

fn show(what: &str, answer: &Answer) {
    println!("{what}");
    println!("  {}", answer.status);
    for name in [POSITION_HEADER, ACCEPTED_SCOPE_HEADER] {
        if let Some(value) = answer.header(name.as_str()) {
            println!("  {name}: {value}");
        }
    }
    println!("  {}\n", answer.body);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(dir.path())?;
    let inboxes = Arc::new(Inboxes::default());
    let forum = Forum::seed(&ledger, &inboxes).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = app::service(&ledger, inboxes.clone(), None, DEFAULT_CONSISTENCY_TIMEOUT);
    tokio::spawn(async move { axum::serve(listener, service).await });
    println!("serving on http://{addr}\n");

    let api = Api::new(addr);
    let bearer = format!("Bearer {}", forum.secret.expose());
    let auth = [("authorization", bearer.as_str())];
    show(
        &format!(
            "GET /conversations/cnv_forum (in the private inbox of {})",
            forum.bob
        ),
        &api.send("GET", "/conversations/cnv_forum", &auth).await?,
    );
    show(
        "GET /conversations/cnv_support (the Support workspace)",
        &api.send("GET", "/conversations/cnv_support", &auth).await?,
    );
    let receipt = ledger.execute(
        Actor::Teammate(forum.admin),
        Command::SetPrivateApiAccessForAll {
            company: forum.company,
            allowed: true,
        },
    )?;
    let token = receipt.position().to_string();
    println!("An admin turns private API access on for everyone (position {token}).\n");
    show(
        "GET /conversations/cnv_forum, at least as fresh as that change",
        &api.send(
            "GET",
            "/conversations/cnv_forum",
            &[auth[0], (CONSISTENCY_HEADER.as_str(), token.as_str())],
        )
        .await?,
    );
    ledger.execute(
        Actor::Teammate(forum.admin),
        Command::DeleteToken {
            token: forum.plugin,
        },
    )?;
    println!("The token is deleted.\n");
    show(
        "GET /conversations/cnv_forum",
        &api.send("GET", "/conversations/cnv_forum", &auth).await?,
    );
    println!("{} requests reached a handler.", inboxes.handled());
    Ok(())
}
