//! Tiers (added and discounted by the event's owner) and the tickets attendees hold.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::ids::{EventId, UserId},
    domain::status::TicketStatus,
    error::{AppError, AppResult, OnConstraint},
    repo::{
        self,
        events::TierRow,
        tickets::{ScanAsk, ScanOutcome},
        tiers::NewTier,
    },
    service::{admission, events},
    state::AppState,
};

pub struct TierInput {
    pub name: String,
    pub price: i64,
    pub quantity: i32,
    pub benefits: Vec<String>,
    pub discount: Option<(i64, i32, OffsetDateTime)>,
}

pub async fn add_tier(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    input: TierInput,
) -> AppResult<TierRow> {
    let (user_id, event_id): (Uuid, Uuid) = (user_id.into(), event_id.into());
    let event = events::load(state, event_id).await?;
    events::ensure_owner(&event, user_id)?;
    events::ensure_open(&event, state.clock.now())?;
    let tier = repo::tiers::insert(
        &state.db,
        NewTier {
            id: Uuid::now_v7(),
            event_id,
            name: input.name.trim(),
            price: input.price,
            quantity: input.quantity,
            benefits: &input.benefits,
            discount: input.discount,
        },
    )
    .await
    .on_constraint("ticket_tiers_event_name_key", AppError::tier_name_taken)?;
    events::changed(state, event_id).await;
    Ok(tier)
}

/// Ends a tier's discount. Ownership is checked against the tier's own event.
pub async fn remove_discount(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    tier: &str,
) -> AppResult<TierRow> {
    let (user_id, event_id): (Uuid, Uuid) = (user_id.into(), event_id.into());
    let event = events::load(state, event_id).await?;
    events::ensure_owner(&event, user_id)?;
    let tier = repo::tiers::find(&state.db, event_id, tier)
        .await?
        .ok_or_else(AppError::tier_not_found)?;
    debug_assert_eq!(tier.event_id, event.id);
    events::ensure_open(&event, state.clock.now())?;
    let tier = repo::tiers::remove_discount(&state.db, tier.id).await?;
    events::changed(state, event_id).await;
    Ok(tier)
}

pub struct Sales {
    pub tiers: Vec<repo::tiers::TierSales>,
    pub totals: repo::ledger::EventTotals,
    pub checked_in: i64,
}

pub async fn sales(state: &AppState, user_id: UserId, event_id: EventId) -> AppResult<Sales> {
    let (user_id, event_id): (Uuid, Uuid) = (user_id.into(), event_id.into());
    let event = events::load(state, event_id).await?;
    events::ensure_owner(&event, user_id)?;
    Ok(Sales {
        tiers: repo::tiers::sales(&state.db, event_id).await?,
        totals: repo::ledger::event_totals(&state.db, event_id).await?,
        checked_in: repo::tiers::checked_in(&state.db, event_id).await?,
    })
}

fn checkin_metric(result: &'static str) {
    metrics::counter!("ticketing_checkins_total", "result" => result).increment(1);
}

/// The event, for its organizer's door. Someone who organizes nothing hears
/// `not_organizer` (as on every organizer route), another organizer `not_event_owner`.
pub async fn owned_for_door(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
) -> AppResult<crate::repo::events::EventRow> {
    let (user_id, event_id): (Uuid, Uuid) = (user_id.into(), event_id.into());
    let event = match events::load(state, event_id).await {
        Ok(event) => event,
        Err(e) => {
            return Err(
                match crate::service::organizers::id_of_user(state, user_id).await? {
                    Some(_) => e,
                    None => AppError::not_organizer(),
                },
            );
        }
    };
    events::ensure_owner_explained(state, &event, user_id).await?;
    Ok(event)
}

/// The door, online: checks a ticket in for the event's organizer, as a scan at the
/// server's time at `gate`. Admitted once, ever. The scans of one event arriving together
/// share one commit (`service::admission`); each is answered after it.
pub async fn check_in(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    access_key: &str,
    gate: &str,
) -> AppResult<repo::tickets::TicketRow> {
    let ask = ScanAsk {
        user_id: user_id.into(),
        access_key: access_key.to_owned(),
        gate: gate.to_owned(),
    };
    let refused = match admission::admit(state, event_id.into(), ask).await {
        ScanOutcome::Admitted(ticket) => {
            checkin_metric("admitted");
            return Ok(*ticket);
        }
        ScanOutcome::Refused(ticket) => ticket,
        ScanOutcome::NotOwner => {
            // No such event, or not the caller's: the slow path says which.
            owned_for_door(state, user_id, event_id).await?;
            return Err(AppError::not_event_owner());
        }
        ScanOutcome::Failed(cause) => {
            checkin_metric("failed");
            return Err(AppError::UnavailableFor(cause, Duration::from_secs(1)));
        }
    };
    let Some(ticket) = refused else {
        checkin_metric("unknown");
        return Err(AppError::not_found("Ticket"));
    };
    if ticket.event_id != Uuid::from(event_id) {
        checkin_metric("wrong_event");
        return Err(AppError::conflict(
            "ticket_not_for_event",
            "This ticket is for another event.",
        ));
    }
    match ticket.status {
        TicketStatus::Void => {
            checkin_metric("void");
            Err(AppError::conflict("ticket_void", "This ticket is void."))
        }
        TicketStatus::Used => {
            checkin_metric("already_used");
            let at = ticket
                .checked_in_at
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            Err(AppError::TicketAlreadyUsed { checked_in_at: at })
        }
        // Valid yet not admitted: only if it changed between the batch's two statements.
        TicketStatus::Valid => {
            checkin_metric("failed");
            Err(AppError::UnavailableFor(
                "the ticket changed while it was scanned".into(),
                Duration::from_secs(1),
            ))
        }
    }
}

/// The caller's tickets, newest first: one page and the cursor of the next.
pub async fn of_user(
    state: &AppState,
    user_id: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> AppResult<(Vec<repo::tickets::TicketRow>, Option<String>)> {
    let rows = repo::tickets::for_user(&state.db, user_id, after, limit + 1).await?;
    Ok(crate::domain::cursor::cut(rows, limit, |t| {
        (t.created_at, t.id)
    }))
}

/// The tickets of one order, by seat.
pub async fn of_order(
    state: &AppState,
    order_id: Uuid,
) -> AppResult<Vec<repo::tickets::TicketRow>> {
    Ok(repo::tickets::for_order(&state.db, order_id).await?)
}

// ---- the QR image a ticket mail links to ----
//
// Mail clients drop `data:` images, and Resend's batch endpoint drops attachments, so the
// ticket mail links each QR code as an image this service serves without login (mail
// clients fetch it): `GET /tickets/qr/<token>.png`. The token is the ticket id and 128 bits
// of an HMAC of it under a key derived from `JWT_SECRET`: unguessable, nothing to store, the
// same in every copy of a mail. Rotating `JWT_SECRET` retires the links of old mails (the
// app still shows every QR code).

fn qr_key(state: &AppState) -> Vec<u8> {
    crate::security::crypto::keyed_hash(
        secrecy::ExposeSecret::expose_secret(&state.config.jwt_secret).as_bytes(),
        "qr-token-key",
    )
    .into_bytes()
}

fn qr_mac(state: &AppState, ticket_id: Uuid) -> String {
    let mac = crate::security::crypto::keyed_hash(&qr_key(state), &ticket_id.simple().to_string());
    mac[..32].to_owned()
}

/// The token of a ticket's QR image (64 hex characters).
pub fn qr_token(state: &AppState, ticket_id: Uuid) -> String {
    format!("{}{}", ticket_id.simple(), qr_mac(state, ticket_id))
}

/// The link to a ticket's QR image, for mails.
pub fn qr_url(state: &AppState, ticket_id: Uuid) -> String {
    format!(
        "{}/tickets/qr/{}.png",
        state.config.public_base_url,
        qr_token(state, ticket_id)
    )
}

/// The PNG behind a QR token; 404 for a token we did not issue or a void ticket.
pub async fn qr_png(state: &AppState, token: &str) -> AppResult<std::sync::Arc<[u8]>> {
    let not_found = || AppError::not_found("QR code");
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let ticket_id = Uuid::parse_str(&token[..32]).map_err(|_| not_found())?;
    let expected = qr_mac(state, ticket_id);
    if !crate::security::signing::constant_time_eq(expected.as_bytes(), &token.as_bytes()[32..]) {
        return Err(not_found());
    }
    let (access_key, status) = repo::tickets::access_key_of(&state.db, ticket_id)
        .await?
        .ok_or_else(not_found)?;
    if status == TicketStatus::Void {
        return Err(not_found());
    }
    tokio::task::spawn_blocking(move || crate::domain::qr::png(&access_key))
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| anyhow::anyhow!("an access key that cannot be drawn").into())
}
