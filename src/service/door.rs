//! The door that keeps working offline (API.md `GET /events/:id/door` and
//! `POST /events/:id/tickets/validate/batch`): scanners download the event's door list (key
//! hashes, never keys), admit offline, and upload their scans later. The record of a ticket
//! is its earliest scan (`repo::tickets::apply_scan`); every other scan of it is answered as
//! a duplicate naming the gate and time of the earliest.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{
        ids::{EventId, UserId},
        status::TicketStatus,
    },
    error::{AppError, AppResult},
    repo::{self, tickets::DoorEntry},
    service::tickets::owned_for_door,
    state::AppState,
};

/// Door entries per page (API.md: up to 1,000).
pub const DOOR_PAGE: i64 = 1_000;

/// A change committed this long after its `changed_at` was taken would be missed by a sync
/// token taken in between; tokens reach back this far, so such a change is sent again
/// instead (entries are whole states: receiving one twice is harmless).
const SYNC_OVERLAP: time::Duration = time::Duration::seconds(10);

pub struct DoorPage {
    pub items: Vec<DoorEntry>,
    pub next_cursor: Option<String>,
    /// On the last page: pass as `since` to get only what changed from now on.
    pub sync_token: Option<String>,
}

/// Where a walk through the door list is: the last ticket sent, the `since` it answers and
/// the sync token it will end with (taken when the walk began, so nothing that changes
/// while it pages is lost).
struct Walk {
    after: Option<Uuid>,
    since: Option<OffsetDateTime>,
    token_at: OffsetDateTime,
}

fn nanos(t: OffsetDateTime) -> String {
    t.unix_timestamp_nanos().to_string()
}

fn from_nanos(s: &str) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(s.parse().ok()?).ok()?;
    // Only times PostgreSQL can compare with ours: anything else was not issued by us.
    (2000..=9999).contains(&t.year()).then_some(t)
}

impl Walk {
    fn encode(&self) -> String {
        let after = self.after.map(|a| a.to_string()).unwrap_or_default();
        let since = self.since.map(nanos).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(format!("{after}|{since}|{}", nanos(self.token_at)))
    }

    fn decode(cursor: &str) -> Option<Walk> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
        let mut parts = raw.split('|');
        let (after, since, token_at) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Walk {
            after: if after.is_empty() {
                None
            } else {
                Some(Uuid::parse_str(after).ok()?)
            },
            since: if since.is_empty() {
                None
            } else {
                Some(from_nanos(since)?)
            },
            token_at: from_nanos(token_at)?,
        })
    }
}

fn bad_token(what: &str) -> AppError {
    AppError::invalid_query(format!("{what} is not one this server issued"))
}

/// One page of the door list; `since` (a sync token) limits it to what changed after it.
pub async fn door_list(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    since: Option<&str>,
    cursor: Option<&str>,
) -> AppResult<DoorPage> {
    let event = owned_for_door(state, user_id, event_id).await?;
    let walk = match cursor {
        Some(c) => Walk::decode(c).ok_or_else(|| bad_token("cursor"))?,
        None => Walk {
            after: None,
            since: match since {
                Some(t) => Some(
                    from_nanos(
                        &String::from_utf8(URL_SAFE_NO_PAD.decode(t).unwrap_or_default())
                            .unwrap_or_default(),
                    )
                    .ok_or_else(|| bad_token("since"))?,
                ),
                None => None,
            },
            // The database's clock, the one `changed_at` is written with.
            token_at: repo::tickets::database_now(&state.db).await? - SYNC_OVERLAP,
        },
    };
    let mut items =
        repo::tickets::door_page(&state.db, event.id, walk.since, walk.after, DOOR_PAGE + 1)
            .await?;
    let more = items.len() as i64 > DOOR_PAGE;
    items.truncate(DOOR_PAGE as usize);
    Ok(if more {
        let next = Walk {
            after: items.last().map(|e| e.ticket_id),
            ..walk
        };
        DoorPage {
            items,
            next_cursor: Some(next.encode()),
            sync_token: None,
        }
    } else {
        DoorPage {
            items,
            next_cursor: None,
            sync_token: Some(URL_SAFE_NO_PAD.encode(nanos(walk.token_at))),
        }
    })
}

pub struct Scan {
    pub access_key: String,
    pub scanned_at: OffsetDateTime,
    pub gate: String,
}

pub enum ScanOutcome {
    Admitted {
        ticket_id: Uuid,
    },
    Duplicate {
        ticket_id: Uuid,
        first_checked_in_at: OffsetDateTime,
        first_gate: String,
    },
    Void {
        ticket_id: Uuid,
    },
    NotForEvent,
    Unknown,
}

/// PostgreSQL keeps microseconds: a scan is compared with the record at that precision.
fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// Applies uploaded scans in `scanned_at` order (the earliest admission of a ticket stands
/// whatever the order of uploads); answers in the order sent. Uploading a scan again
/// answers it again from the record as it stands.
pub async fn validate_batch(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    scans: Vec<Scan>,
) -> AppResult<Vec<(Scan, ScanOutcome)>> {
    let event = owned_for_door(state, user_id, event_id).await?;
    let mut order: Vec<usize> = (0..scans.len()).collect();
    order.sort_by_key(|&i| scans[i].scanned_at);
    let mut outcomes: Vec<Option<ScanOutcome>> = (0..scans.len()).map(|_| None).collect();
    for i in order {
        let scan = &scans[i];
        let at = to_micros(scan.scanned_at);
        let state_after =
            repo::tickets::apply_scan(&state.db, event.id, &scan.access_key, at, &scan.gate)
                .await?;
        let outcome = match state_after {
            None => ScanOutcome::Unknown,
            Some(t) if t.event_id != event.id => ScanOutcome::NotForEvent,
            Some(t) if t.status == TicketStatus::Void => ScanOutcome::Void {
                ticket_id: t.ticket_id,
            },
            Some(t) => {
                let first_at = t.checked_in_at.unwrap_or(at);
                let first_gate = t.checked_in_gate.unwrap_or_default();
                if first_at == at && first_gate == scan.gate {
                    ScanOutcome::Admitted {
                        ticket_id: t.ticket_id,
                    }
                } else {
                    ScanOutcome::Duplicate {
                        ticket_id: t.ticket_id,
                        first_checked_in_at: first_at,
                        first_gate,
                    }
                }
            }
        };
        let label = match &outcome {
            ScanOutcome::Admitted { .. } => "admitted",
            ScanOutcome::Duplicate { .. } => "duplicate",
            ScanOutcome::Void { .. } => "void",
            ScanOutcome::NotForEvent => "wrong_event",
            ScanOutcome::Unknown => "unknown",
        };
        metrics::counter!("ticketing_checkins_total", "result" => label).increment(1);
        outcomes[i] = Some(outcome);
    }
    Ok(scans
        .into_iter()
        .zip(outcomes)
        .map(|(s, o)| (s, o.unwrap_or(ScanOutcome::Unknown)))
        .collect())
}
