//! Helpers shared by tokenledger's benchmarks: the events they append.
//!
//! Run them with `cargo bench -p tokenledger-benches`; each group measures
//! its baseline in the same run, so ratios are comparable on a noisy machine.

use tokenledger_events::{
    Actor, CompanyId, Envelope, Event, EventId, TeammateId, Timestamp, TokenId, encode_envelope,
};
use tokenledger_store::NewEvent;

/// A typical small event (an admin revealing a token), with a distinct id.
pub fn reveal(id: u128) -> NewEvent {
    NewEvent {
        event_id: EventId::from_u128(id),
        actor: Actor::Teammate(TeammateId::from_u128(0xad)),
        company: CompanyId::from_u128(0xc0),
        event: Event::TokenRevealed {
            token: TokenId::from_u128(id),
        },
    }
}

/// The size in bytes of a stored [`reveal`] record: the store's 66-byte
/// record header (`crates/store/src/record.rs`) and the encoded envelope.
pub fn record_len() -> usize {
    let event = reveal(1);
    let envelope = Envelope {
        position: 1,
        event_id: event.event_id,
        recorded_at: Timestamp::from_micros(1),
        actor: event.actor,
        company: event.company,
        event: event.event,
    };
    66 + encode_envelope(&envelope).map_or(0, |bytes| bytes.len())
}
