//! The check between appending a command's events and applying them: the
//! log must give back, at the positions it acknowledged, exactly the events
//! appended. A log that acknowledged a group and then failed to take it in
//! (the group is in its journal, not in sled) gives back nothing; applying
//! nothing would leave a delete unapplied while the command succeeded, and
//! the token allowed until a restart.

use tokenledger_events::{Envelope, EventId};
use tokenledger_store::NewEvent;

/// What was appended and what was read back, by position and event id,
/// when the two differ.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// The events appended, at the positions acknowledged (0 for an event
    /// the log acknowledged no position for).
    pub(crate) appended: Vec<(u64, EventId)>,
    /// The events read back from the first position acknowledged.
    pub(crate) read_back: Vec<(u64, EventId)>,
}

/// Whether `read` is `appended`, event for event, at `positions`: the same
/// count, positions, event ids, actors, companies and events.
pub(crate) fn confirm(
    appended: &[NewEvent],
    positions: &[u64],
    read: &[Envelope],
) -> Result<(), Mismatch> {
    let same = appended.len() == positions.len()
        && appended.len() == read.len()
        && appended
            .iter()
            .zip(positions)
            .zip(read)
            .all(|((new, position), got)| {
                got.position == *position
                    && got.event_id == new.event_id
                    && got.actor == new.actor
                    && got.company == new.company
                    && got.event == new.event
            });
    if same {
        return Ok(());
    }
    Err(Mismatch {
        appended: appended
            .iter()
            .enumerate()
            .map(|(i, new)| (positions.get(i).copied().unwrap_or(0), new.event_id))
            .collect(),
        read_back: read.iter().map(|e| (e.position, e.event_id)).collect(),
    })
}

/// `position 7 (event `…`), position 8 (event `…`)`, or `nothing`.
pub(crate) fn describe(events: &[(u64, EventId)]) -> String {
    if events.is_empty() {
        return "nothing".to_owned();
    }
    events
        .iter()
        .map(|(position, id)| format!("position {position} (event `{id}`)"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenledger_events::{Actor, CompanyId, Event, Name, Timestamp, TokenId};

    fn new(id: u128) -> NewEvent {
        NewEvent {
            event_id: EventId::from_u128(id),
            actor: Actor::System,
            company: CompanyId::from_u128(1),
            event: Event::TokenDeleted {
                token: TokenId::from_u128(id),
            },
        }
    }

    fn stored(position: u64, new: &NewEvent) -> Envelope {
        Envelope {
            position,
            event_id: new.event_id,
            recorded_at: Timestamp::from_micros(position),
            actor: new.actor,
            company: new.company,
            event: new.event.clone(),
        }
    }

    #[test]
    fn the_events_appended_read_back_where_acknowledged_are_confirmed() {
        let appended = [new(1), new(2)];
        let read = [stored(5, &appended[0]), stored(6, &appended[1])];
        assert_eq!(confirm(&appended, &[5, 6], &read), Ok(()));
    }

    #[test]
    fn fewer_events_other_positions_ids_or_contents_are_a_mismatch() {
        let appended = [new(1), new(2)];
        let at = |i: usize, position| stored(position, &appended[i]);
        let fewer = confirm(&appended, &[5, 6], &[at(0, 5)]).unwrap_err();
        assert_eq!(fewer.read_back, vec![(5, EventId::from_u128(1))]);
        assert_eq!(
            fewer.appended,
            vec![(5, EventId::from_u128(1)), (6, EventId::from_u128(2))]
        );
        assert!(confirm(&appended, &[5, 6], &[]).is_err());
        assert!(confirm(&appended, &[5, 6], &[at(0, 6), at(1, 7)]).is_err());
        assert!(confirm(&appended, &[5, 6], &[at(1, 5), at(0, 6)]).is_err());
        assert!(confirm(&appended, &[5], &[at(0, 5), at(1, 6)]).is_err());
        let mut other = at(1, 6);
        other.event = Event::CompanyCreated {
            company: CompanyId::from_u128(1),
            name: Name::new("Acme").unwrap(),
        };
        assert!(confirm(&appended, &[5, 6], &[at(0, 5), other]).is_err());
        let mut other_actor = at(1, 6);
        other_actor.company = CompanyId::from_u128(2);
        assert!(confirm(&appended, &[5, 6], &[at(0, 5), other_actor]).is_err());
    }

    #[test]
    fn a_mismatch_names_positions_and_event_ids() {
        assert_eq!(describe(&[]), "nothing");
        let id = EventId::from_u128(1);
        assert_eq!(
            describe(&[(7, id), (8, id)]),
            format!("position 7 (event `{id}`), position 8 (event `{id}`)")
        );
    }
}
