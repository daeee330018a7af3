//! Idempotency keys: the ids of a keyed command's events are derived from
//! its key and its request, so that the log itself recognises a retry,
//! after a restart or on another process sharing the log.

use std::fmt;

use tokenledger_events::EventId;

/// The domain of the derivation: another use of BLAKE3 over the same
/// bytes gives other ids.
const DOMAIN: &str = "tokenledger idempotency v1";

/// A command's idempotency key, made from the key its client chose and a
/// fingerprint of the request it came with (a hash of what the request
/// asks: route, path and body, say). The ledger gives the command's
/// events ids derived from the two ([`IdempotencyKey::event_id`]), and
/// before deciding a keyed command looks for its first id in the log: a
/// command found there is not decided again, and is answered with the
/// events recorded then (`Ledger::execute_once`).
///
/// The fingerprint is part of the derivation: the same key sent with
/// another request derives other ids, and runs as a new command. Only
/// something that remembers both (the HTTP service, for as long as it
/// keeps a key's reply in memory) can refuse such a reuse. The
/// fingerprint should name everything the request asks, including who
/// asks: a replay is refused if the event found is another actor's or
/// another command's, but two requests that differ only in what the
/// command does not record would be taken for one.
///
/// Nothing here is secret: the ids derived are recorded in the log, in
/// the clear, and the key and fingerprint are not kept, only a BLAKE3
/// hash of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// BLAKE3, in key-derivation mode for [`DOMAIN`], of the key and the
    /// fingerprint, each preceded by its length.
    derived: [u8; 32],
}

impl IdempotencyKey {
    /// The key `key` (the client's bytes) for the request whose
    /// fingerprint is `fingerprint`.
    pub fn new(key: &[u8], fingerprint: &[u8]) -> IdempotencyKey {
        let mut hasher = blake3::Hasher::new_derive_key(DOMAIN);
        for part in [key, fingerprint] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        IdempotencyKey {
            derived: *hasher.finalize().as_bytes(),
        }
    }

    /// The id of the keyed command's event at `index` (0 for its first):
    /// the first 16 bytes of BLAKE3 keyed with the derived key, over the
    /// index.
    pub fn event_id(&self, index: u64) -> EventId {
        let hash = blake3::keyed_hash(&self.derived, &index.to_be_bytes());
        let mut id = [0; 16];
        for (to, from) in id.iter_mut().zip(hash.as_bytes()) {
            *to = *from;
        }
        EventId::from_u128(u128::from_be_bytes(id))
    }
}

/// The id of its first event, which is how the log knows it.
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey")
            .field(&self.event_id(0))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_and_request_derive_the_same_ids_and_any_change_others() {
        let key = IdempotencyKey::new(b"retry-1", b"request");
        assert_eq!(
            key.event_id(0),
            IdempotencyKey::new(b"retry-1", b"request").event_id(0)
        );
        assert_ne!(key.event_id(0), key.event_id(1));
        let others = [
            IdempotencyKey::new(b"retry-2", b"request"),
            IdempotencyKey::new(b"retry-1", b"requesT"),
            // The lengths keep the two apart: no shifting of bytes across.
            IdempotencyKey::new(b"retry-1r", b"equest"),
            IdempotencyKey::new(b"", b"retry-1request"),
        ];
        for other in others {
            assert_ne!(other, key);
            assert_ne!(other.event_id(0), key.event_id(0));
        }
    }

    #[test]
    fn the_derivation_is_pinned() {
        // A change here makes every retry across an upgrade run again.
        let key = IdempotencyKey::new(b"k", b"f");
        assert_eq!(
            key.event_id(0).to_string(),
            "evt_4326393c283155cae6c18468dabf7cd6"
        );
    }
}
