//! `/events*`: create, read, change and cancel events; browse and nearby search.

use axum::{
    Json,
    extract::{DefaultBodyLimit, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    domain::ids::{EventId, OrderId, UserId},
    domain::image::MAX_POSTER_BYTES,
    error::{AppResult, FieldError},
    http::{
        event_input::{EventInput, EventPatch, EventPayload},
        extract::{
            Checks, OptionalJson, Organizer, Page, PathId, PathIds, Validate, ValidatedJson,
            bad_query, parse_time, query_pairs,
        },
        responses::{EventList, EventResponse, OrderResponse, TierResponse, order_response},
    },
    memo::EventDocument,
    service::events::{self, BrowseQuery, CATEGORIES},
    state::AppState,
};

/// Multipart bodies carry a poster of up to 5 MiB plus the JSON part.
const MULTIPART_BODY_LIMIT: usize = MAX_POSTER_BYTES + 512 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(create_event))
        .routes(routes!(get_event, update_event))
        .route_layer(DefaultBodyLimit::max(MULTIPART_BODY_LIMIT));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(cancel_event))
        .routes(routes!(refund_order))
        .routes(routes!(nearby_events))
        .routes(routes!(browse_events))
}

// ---- handlers ----

/// Create an event (organizers only). JSON, or multipart with `data` (JSON) and `poster`.
#[utoipa::path(post, path = "/events/create", tag = "events", security(("bearer" = [])),
    request_body(content = EventInput, description = "JSON, or multipart/form-data with a `data` JSON part and an optional `poster` image part"),
    responses(
        (status = 201, body = EventResponse),
        (status = 403, description = "`not_organizer`"),
        (status = 413),
        (status = 422, description = "`validation_failed` (also a poster that is not JPEG/PNG/WebP or over 5 MiB)"),
        (status = 502, description = "image storage failed; no event was created"),
    ))]
async fn create_event(
    State(state): State<AppState>,
    organizer: Organizer,
    payload: EventPayload<EventInput>,
) -> AppResult<(StatusCode, Json<EventResponse>)> {
    let event = events::create(
        &state,
        organizer.organizer_id,
        payload.data.into(),
        payload.poster,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EventResponse::at(event, state.clock.now())),
    ))
}

/// An event with its tiers. Public. Carries an `ETag`; `If-None-Match` with it answers 304
/// with no body while nothing (tiers' availability included) has changed. Served from the
/// instance's memo: at most a second old, and dropped at once when the event is changed.
#[utoipa::path(get, path = "/events/{event_id}", tag = "events",
    params(
        ("event_id" = Uuid, Path),
        ("If-None-Match" = Option<String>, Header, description = "an `ETag` of an earlier answer"),
    ),
    responses(
        (status = 200, body = EventResponse, headers(("ETag" = String, description = "identifies this representation"))),
        (status = 304, description = "unchanged since the `ETag` sent in `If-None-Match`", headers(("ETag" = String))),
    ))]
async fn get_event(
    State(state): State<AppState>,
    PathId(id): PathId,
    headers: axum::http::HeaderMap,
) -> AppResult<Response> {
    let document = match state.hub.memo.events.get(&id) {
        Some(document) => document,
        None => {
            let memo = &state.hub.memo.events;
            let ticket = memo.ticket();
            let document = event_document(&state, id).await?;
            memo.put(ticket, id, document.clone());
            document
        }
    };
    let etag = document.etag;
    let cache = [
        (header::ETAG, etag.clone()),
        // Clients may keep it but must ask again (a tier's availability moves).
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        document.bytes,
    )
        .into_response())
}

/// The public document of an event as served, read from PostgreSQL (two queries) and
/// rendered once: `get_event` keeps it in the instance's memo for up to a second.
async fn event_document(state: &AppState, id: uuid::Uuid) -> AppResult<EventDocument> {
    let (event, tiers) = events::with_tiers(state, id).await?;
    let mut body = EventResponse::at(event, state.clock.now());
    body.tiers = Some(tiers.into_iter().map(TierResponse::from).collect());
    let bytes = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    // Strong: the tag is a digest of the exact bytes, so equal tags mean equal answers.
    let etag = format!(
        "\"{}\"",
        &hex::encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)
        ))[..32]
    );
    Ok(EventDocument {
        bytes: bytes.into(),
        etag,
    })
}

/// Change an event (its organizer only; not once cancelled or ended).
#[utoipa::path(patch, path = "/events/{event_id}", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)),
    request_body(content = EventPatch, description = "JSON, or multipart with `data` and a replacement `poster`"),
    responses(
        (status = 200, body = EventResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 409, description = "`event_cancelled`, `event_ended`"),
    ))]
async fn update_event(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(id): PathId,
    payload: EventPayload<EventPatch>,
) -> AppResult<Json<EventResponse>> {
    let patch = payload.data;
    let event = events::update(
        &state,
        UserId(organizer.user_id),
        EventId(id),
        |fields| patch.apply(fields, state.clock.now()),
        payload.poster,
    )
    .await?;
    Ok(Json(EventResponse::at(event, state.clock.now())))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

impl Validate for CancelRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        Checks::new()
            .check(
                self.reason
                    .as_ref()
                    .is_none_or(|r| r.chars().count() <= 1000),
                "reason",
                "must be at most 1000 characters",
            )
            .finish()
    }
}

/// Cancel an event (its organizer only): allowed until its payout has started, also after it
/// ended. Every paid order is refunded in full (a refund job each, holders mailed), every
/// ticket is void and pending holds are voided. A second cancel is 409 `event_cancelled`.
#[utoipa::path(post, path = "/events/{event_id}/cancel", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)),
    request_body(content = Option<CancelRequest>, description = "optional: no body is no reason"),
    responses(
        (status = 202, body = EventResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 409, description = "`event_cancelled` (cancelled already), `payout_started`"),
    ))]
async fn cancel_event(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(id): PathId,
    OptionalJson(request): OptionalJson<CancelRequest>,
) -> AppResult<(StatusCode, Json<EventResponse>)> {
    let reason = request.reason;
    let event = events::cancel(
        &state,
        UserId(organizer.user_id),
        EventId(id),
        reason.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EventResponse::at(event, state.clock.now())),
    ))
}

/// Refund one paid order in full (the event's organizer only), before the event's payout has
/// started. Its tickets are void at once; the refund is sent to Paystack by a job and the
/// order becomes `refunded` once Paystack has processed it.
#[utoipa::path(post, path = "/events/{event_id}/orders/{order_id}/refund", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path), ("order_id" = Uuid, Path)),
    request_body(content = Option<CancelRequest>, description = "optional: no body is no reason"),
    responses(
        (status = 202, description = "The order, `refund_pending`", body = OrderResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 404, description = "unknown event, or no such order of this event"),
        (status = 409, description = "`order_not_refundable` (not paid), `payout_started`"),
    ))]
async fn refund_order(
    State(state): State<AppState>,
    organizer: Organizer,
    PathIds(event_id, order_id): PathIds,
    OptionalJson(request): OptionalJson<CancelRequest>,
) -> AppResult<(StatusCode, Json<OrderResponse>)> {
    let order = crate::service::refunds::refund_order(
        &state,
        UserId(organizer.user_id),
        EventId(event_id),
        OrderId(order_id),
        request.reason.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(order_response(&state, order).await?),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NearbyRequest {
    pub latitude: f64,
    pub longitude: f64,
    /// Default 25, at most 500.
    pub radius_km: Option<f64>,
    /// Default 20, at most 100.
    pub limit: Option<i64>,
}

impl Validate for NearbyRequest {
    fn validate(&self, _now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        Checks::new()
            .check(
                (-90.0..=90.0).contains(&self.latitude),
                "latitude",
                "must be between -90 and 90",
            )
            .check(
                (-180.0..=180.0).contains(&self.longitude),
                "longitude",
                "must be between -180 and 180",
            )
            .check(
                self.radius_km.is_none_or(|r| r > 0.0 && r <= 500.0),
                "radius_km",
                "must be more than 0 and at most 500",
            )
            .check(
                self.limit.is_none_or(|l| (1..=100).contains(&l)),
                "limit",
                "must be 1 to 100",
            )
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct NearbyResponse {
    /// Nearest first, each with `distance_km`.
    pub items: Vec<EventResponse>,
}

/// Upcoming events near a point, nearest first. Public.
#[utoipa::path(post, path = "/events/nearby", tag = "events", request_body = NearbyRequest,
    responses(
        (status = 200, body = NearbyResponse),
    ))]
async fn nearby_events(
    State(state): State<AppState>,
    ValidatedJson(body): ValidatedJson<NearbyRequest>,
) -> AppResult<Json<NearbyResponse>> {
    let hits = events::nearby(
        &state,
        body.latitude,
        body.longitude,
        body.radius_km.unwrap_or(25.0),
        body.limit.unwrap_or(20),
    )
    .await?;
    Ok(Json(NearbyResponse {
        items: hits
            .into_iter()
            .map(|(e, km)| {
                let mut r = EventResponse::at(e, state.clock.now());
                r.distance_km = Some((km * 1000.0).round() / 1000.0);
                r
            })
            .collect(),
    }))
}

/// Upcoming events, soonest first. `category` may repeat; `q` matches title, venue and city
/// (case-insensitive substring); `from`/`to` bound `starts_at` to `[from, to)`.
#[utoipa::path(get, path = "/events", tag = "events",
    params(
        ("category" = Option<Vec<String>>, Query, description = "may repeat"),
        ("q" = Option<String>, Query),
        ("from" = Option<String>, Query, description = "RFC 3339"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("cursor" = Option<String>, Query),
        ("limit" = Option<i64>, Query, description = "default 20, at most 100"),
    ),
    responses(
        (status = 200, body = EventList),
        (status = 400, description = "`invalid_query`"),
    ))]
async fn browse_events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> AppResult<Json<EventList>> {
    let mut categories = Vec::new();
    let (mut q, mut from, mut to, mut cursor_raw, mut limit) = (None, None, None, None, None);
    let known = ["category", "q", "from", "to", "cursor", "limit"];
    for (k, v) in query_pairs(query.as_deref(), &known)? {
        match k.as_str() {
            "category" => {
                if !CATEGORIES.contains(&v.as_str()) {
                    return Err(bad_query(format!("unknown category {v:?}")));
                }
                categories.push(v);
            }
            "q" => {
                if v.chars().count() > 100 || v.contains('\0') {
                    return Err(bad_query("q must be at most 100 characters, without NUL"));
                }
                q = Some(v).filter(|s| !s.trim().is_empty());
            }
            "from" => from = Some(parse_time("from", &v)?),
            "to" => to = Some(parse_time("to", &v)?),
            "cursor" => cursor_raw = Some(v),
            _ => limit = Some(v),
        }
    }
    let Page {
        limit,
        after: cursor,
    } = Page::parse(limit.as_deref(), cursor_raw.as_deref())?;
    if categories.len() > 11 {
        return Err(bad_query("too many categories"));
    }
    let page = events::browse(
        &state,
        BrowseQuery {
            categories,
            q,
            from,
            to,
            cursor,
            limit,
        },
    )
    .await?;
    Ok(Json(EventList {
        items: page
            .items
            .into_iter()
            .map(|e| EventResponse::at(e, state.clock.now()))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
