//! Events: creation (with an optional poster), changes and cancellation by their organizer,
//! public reads, browsing and nearby search.
//!
//! An event is `scheduled` until it ends (`ended`, read-only) or is `cancelled`; `ended` is
//! derived from `ends_at`, never stored, so nothing has to flip it on time.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    clients::media::{Image, MediaError, StoredImage},
    domain::cursor,
    domain::{
        ids::{EventId, OrderId, UserId},
        status::{EventStatus, OrderStatus, RefundReason},
    },
    error::{AppError, AppResult},
    repo::{
        self,
        events::{BrowseFilter, EventFields, EventRow, TierRow},
    },
    service::holds,
    state::AppState,
};

pub const CATEGORIES: [&str; 11] = [
    "tech",
    "health",
    "music",
    "comedy",
    "nightlife",
    "art",
    "fashion",
    "sports",
    "business",
    "conference",
    "other",
];

pub fn status_of(event: &EventRow, now: OffsetDateTime) -> EventStatus {
    if event.status == EventStatus::Cancelled {
        EventStatus::Cancelled
    } else if event.ends_at <= now {
        EventStatus::Ended
    } else {
        EventStatus::Scheduled
    }
}

/// Why an event cannot be changed any more, if it cannot.
pub fn ensure_open(event: &EventRow, now: OffsetDateTime) -> AppResult<()> {
    match status_of(event, now) {
        EventStatus::Cancelled => Err(AppError::event_cancelled()),
        EventStatus::Ended => Err(AppError::event_ended()),
        EventStatus::Scheduled => Ok(()),
    }
}

pub fn ensure_owner(event: &EventRow, user_id: Uuid) -> AppResult<()> {
    if event.organizer_user_id == user_id {
        Ok(())
    } else {
        Err(AppError::not_event_owner())
    }
}

/// Like `ensure_owner`, but a caller who is no organizer at all hears `not_organizer`, as
/// on every organizer route — with the organizer lookup only on the refusing path, so the
/// door's hot path pays nothing for it.
pub async fn ensure_owner_explained(
    state: &AppState,
    event: &EventRow,
    user_id: Uuid,
) -> AppResult<()> {
    if event.organizer_user_id == user_id {
        return Ok(());
    }
    match repo::organizers::id_for_user(&state.db, user_id).await? {
        Some(_) => Err(AppError::not_event_owner()),
        None => Err(AppError::not_organizer()),
    }
}

/// Either way the client gets a 502: a refusal by the store is our configuration's fault,
/// not the request's (the image was already checked).
fn media_error(e: MediaError) -> AppError {
    let (MediaError::Unavailable(cause) | MediaError::Rejected(cause)) = e;
    AppError::Upstream {
        provider: "image storage",
        cause,
    }
}

pub async fn load(state: &AppState, id: Uuid) -> AppResult<EventRow> {
    repo::events::find(&state.db, id)
        .await?
        .ok_or_else(|| AppError::not_found("Event"))
}

/// Stores a poster for event `id`, if one was sent.
async fn store_poster(
    state: &AppState,
    id: Uuid,
    poster: Option<&Image>,
) -> AppResult<Option<StoredImage>> {
    match poster {
        Some(image) => Ok(Some(
            state
                .media
                .put_poster(id, image)
                .await
                .map_err(media_error)?,
        )),
        None => Ok(None),
    }
}

/// Creates the event; with a poster, the poster is stored first, so a failed upload leaves
/// no event behind (and a failed insert removes the poster again).
pub async fn create(
    state: &AppState,
    organizer_id: Uuid,
    fields: EventFields,
    poster: Option<Image>,
) -> AppResult<EventRow> {
    let id = Uuid::now_v7();
    let stored = store_poster(state, id, poster.as_ref()).await?;
    let poster_ref = stored
        .as_ref()
        .map(|s| (s.url.as_str(), s.public_id.as_str()));
    if let Err(e) = repo::events::insert(&state.db, id, organizer_id, &fields, poster_ref).await {
        if let Some(s) = &stored {
            state.media.delete(&s.public_id).await;
        }
        return Err(e.into());
    }
    metrics::counter!("ticketing_events_created_total").increment(1);
    tracing::info!(event_id = %id, "event created");
    load(state, id).await
}

/// Applies a change by the owner while the event is open.
pub async fn update(
    state: &AppState,
    user_id: UserId,
    id: EventId,
    apply: impl FnOnce(&mut EventFields) -> AppResult<()>,
    poster: Option<Image>,
) -> AppResult<EventRow> {
    let (user_id, id): (Uuid, Uuid) = (user_id.into(), id.into());
    let event = load(state, id).await?;
    ensure_owner(&event, user_id)?;
    ensure_open(&event, state.clock.now())?;
    let mut fields = EventFields::from(&event);
    apply(&mut fields)?;
    let stored = store_poster(state, id, poster.as_ref()).await?;
    let poster_ref = stored
        .as_ref()
        .map(|s| (s.url.as_str(), s.public_id.as_str()));
    if !repo::events::update_fields(&state.db, id, &fields, poster_ref, state.clock.now()).await? {
        // Cancelled or ended between the read and the write.
        ensure_open(&load(state, id).await?, state.clock.now())?;
    }
    changed(state, id).await;
    load(state, id).await
}

/// `POST /events/:id/cancel`: allowed until the event's payout has started, also after it
/// ended. In one transaction under the event row's lock (which waits for settlements in
/// flight): the event is cancelled and every paid order is owed back — seats returned,
/// tickets void, ledger reversed, a refund created. Then pending holds are voided and the
/// refunds queued (their holders are mailed as each refund starts).
pub async fn cancel(
    state: &AppState,
    user_id: UserId,
    id: EventId,
    reason: Option<&str>,
) -> AppResult<EventRow> {
    let (user_id, id): (Uuid, Uuid) = (user_id.into(), id.into());
    let event = load(state, id).await?;
    ensure_owner(&event, user_id)?;
    let mut tx = state.db.begin().await?;
    let locked = repo::events::lock_exclusive(&mut *tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("Event"))?;
    if locked.status == EventStatus::Cancelled {
        return Err(AppError::event_cancelled());
    }
    if locked.payout_started_at.is_some() {
        return Err(AppError::payout_started());
    }
    if !repo::events::cancel(&mut *tx, id, reason).await? {
        return Err(anyhow::anyhow!("event changed under its lock").into());
    }
    let paid = repo::orders::paid_for_event(&mut *tx, id).await?;
    let moved = repo::orders::owe_back_paid(&mut *tx, &paid, RefundReason::EventCancelled).await?;
    let owed = repo::ledger::reverse_and_refund(&mut tx, &paid, reason).await?;
    tx.commit().await?;
    changed(state, id).await;
    for (_, _, reference) in &moved {
        holds::publish_status(state, reference, OrderStatus::RefundPending).await;
    }
    // Pending holds are voided one by one (each gives its seats back once); a hold paid
    // meanwhile sees the event cancelled and is refunded by its settlement.
    // The cancel has committed: a hold that fails to end here is expired by the sweeper (and
    // a payment for it refunded), so log and go on rather than answer a 5xx.
    for order_id in repo::orders::pending_for_event(&state.db, id).await? {
        if let Err(e) = holds::end(state, OrderId(order_id), OrderStatus::Cancelled).await {
            tracing::warn!(error = %e, %order_id, "hold of a cancelled event not voided yet");
        }
    }
    let owed: Vec<OrderId> = owed.into_iter().map(OrderId).collect();
    state.queues.refunds_best_effort(&owed).await;
    metrics::counter!("ticketing_events_cancelled_total").increment(1);
    tracing::info!(event_id = %id, refunds = owed.len(), "event cancelled");
    load(state, id).await
}

/// Every instance drops its copy of the event's public document (`GET /events/:id` is served
/// from a per-instance memo, at most a second old): called after anything but a sale changes
/// it — its fields, its status, its tiers. A sale moves only availability, which API.md lets
/// lag by up to that second.
pub async fn changed(state: &AppState, id: Uuid) {
    crate::hub::announce(&state.hub, &state.redis, crate::memo::Change::Event(id)).await;
}

pub async fn with_tiers(state: &AppState, id: Uuid) -> AppResult<(EventRow, Vec<TierRow>)> {
    let event = load(state, id).await?;
    let tiers = repo::events::tiers_for_events(&state.db, &[id]).await?;
    Ok((event, tiers))
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Turns `limit + 1` keyset rows into a page of events and the cursor of the next page.
async fn load_page(
    state: &AppState,
    rows: Vec<(Uuid, OffsetDateTime)>,
    limit: i64,
) -> AppResult<Page<EventRow>> {
    let (rows, next_cursor) = cursor::cut(rows, limit, |(id, at)| (*at, *id));
    let ids: Vec<Uuid> = rows.into_iter().map(|(id, _)| id).collect();
    Ok(Page {
        items: repo::events::load_many(&state.db, &ids).await?,
        next_cursor,
    })
}

pub struct BrowseQuery {
    pub categories: Vec<String>,
    pub q: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub cursor: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

/// `%…%` with LIKE's metacharacters escaped, for a plain substring match.
fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

pub async fn browse(state: &AppState, q: BrowseQuery) -> AppResult<Page<EventRow>> {
    let pattern = q.q.as_deref().map(like_pattern);
    let rows = repo::events::browse(
        &state.db,
        BrowseFilter {
            categories: (!q.categories.is_empty()).then_some(&q.categories[..]),
            pattern: pattern.as_deref(),
            from: q.from,
            to: q.to,
            after: q.cursor,
            // One more than asked, to know whether there is a next page.
            limit: q.limit + 1,
            now: state.clock.now(),
        },
    )
    .await?;
    load_page(state, rows, q.limit).await
}

pub async fn organized_by(
    state: &AppState,
    organizer_id: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> AppResult<Page<EventRow>> {
    let rows = repo::events::by_organizer(&state.db, organizer_id, after, limit + 1).await?;
    load_page(state, rows, limit).await
}

pub async fn nearby(
    state: &AppState,
    latitude: f64,
    longitude: f64,
    radius_km: f64,
    limit: i64,
) -> AppResult<Vec<(EventRow, f64)>> {
    let hits = repo::events::nearby(
        &state.db,
        crate::domain::geo::snap_degrees(latitude),
        crate::domain::geo::snap_degrees(longitude),
        crate::domain::geo::radius_metres(radius_km),
        limit,
        state.clock.now(),
    )
    .await?;
    let ids: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
    let events = repo::events::load_many(&state.db, &ids).await?;
    Ok(events
        .into_iter()
        .zip(hits)
        .map(|(e, (_, meters))| (e, meters / 1000.0))
        .collect())
}

pub async fn attended_by(
    state: &AppState,
    user_id: Uuid,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> AppResult<Page<EventRow>> {
    let rows = repo::events::attended_by(&state.db, user_id, after, limit + 1).await?;
    load_page(state, rows, limit).await
}
