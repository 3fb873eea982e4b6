//! Tiers (added and discounted by the event's owner) and the tickets attendees hold.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::ids::{EventId, UserId},
    domain::status::TicketStatus,
    error::{AppError, AppResult, OnConstraint},
    repo::{self, events::TierRow, tiers::NewTier},
    service::events,
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
    repo::tiers::insert(
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
    .on_constraint("ticket_tiers_event_name_key", AppError::tier_name_taken)
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
    Ok(repo::tiers::remove_discount(&state.db, tier.id).await?)
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
/// server's time at `gate`. Admitted once, ever.
pub async fn check_in(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    access_key: &str,
    gate: &str,
) -> AppResult<repo::tickets::TicketRow> {
    let event_id: Uuid = owned_for_door(state, user_id, event_id).await?.id;
    if let Some(ticket) = repo::tickets::check_in(&state.db, event_id, access_key, gate).await? {
        checkin_metric("admitted");
        return Ok(ticket);
    }
    let (ticket_event, status, checked_in_at) = repo::tickets::find_by_key(&state.db, access_key)
        .await?
        .ok_or_else(|| {
            checkin_metric("unknown");
            AppError::not_found("Ticket")
        })?;
    if ticket_event != event_id {
        checkin_metric("wrong_event");
        return Err(AppError::conflict(
            "ticket_not_for_event",
            "This ticket is for another event.",
        ));
    }
    if status == TicketStatus::Void {
        checkin_metric("void");
        return Err(AppError::conflict("ticket_void", "This ticket is void."));
    }
    checkin_metric("already_used");
    let at = checked_in_at
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Err(AppError::TicketAlreadyUsed { checked_in_at: at })
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
