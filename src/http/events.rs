//! `/events*`: create, read, change and cancel events; browse and nearby search.

use axum::{
    Json,
    extract::{DefaultBodyLimit, FromRequest, Multipart, RawQuery, Request, State},
    http::{StatusCode, header},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    clients::media::{Image, ImageKind, MAX_POSTER_BYTES},
    error::{AppError, AppResult, FieldError, Problem},
    http::{
        extract::{
            Checks, Organizer, Page, PathId, PathIds, Validate, ValidatedJson, bad_query,
            parse_json, parse_time, query_pairs,
        },
        responses::{EventList, EventResponse, OrderResponse, TierResponse, order_response},
    },
    repo::events::EventFields,
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

// ---- request types ----

/// `event input` of API.md.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub title: String,
    pub description: String,
    pub category: String,
    pub venue: String,
    pub address: String,
    pub city: String,
    pub country: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub timezone: Option<String>,
    pub max_per_order: Option<i32>,
    pub age_restriction: Option<i32>,
}

/// Any field of `event input`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub venue: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    pub timezone: Option<String>,
    pub max_per_order: Option<i32>,
    pub age_restriction: Option<i32>,
}

fn text(c: &mut Checks, field: &str, value: Option<&str>, max: usize) {
    if let Some(v) = value {
        let n = v.trim().chars().count();
        c.check(
            (1..=max).contains(&n),
            field,
            &format!("must be 1 to {max} characters"),
        );
    }
}

/// The checks shared by create and patch; `None` means "not given".
#[allow(clippy::too_many_arguments)]
fn check_event(
    c: &mut Checks,
    title: Option<&str>,
    description: Option<&str>,
    category: Option<&str>,
    places: [(&str, Option<&str>); 4],
    latitude: Option<f64>,
    longitude: Option<f64>,
    starts_at: Option<OffsetDateTime>,
    timezone: Option<&str>,
    max_per_order: Option<i32>,
    age_restriction: Option<i32>,
) {
    text(c, "title", title, 200);
    text(c, "description", description, 10_000);
    for (field, v) in places {
        text(c, field, v, 200);
    }
    if let Some(cat) = category {
        c.check(
            CATEGORIES.contains(&cat),
            "category",
            "must be one of tech, health, music, comedy, nightlife, art, fashion, sports, business, conference, other",
        );
    }
    if let Some(lat) = latitude {
        c.check(
            (-90.0..=90.0).contains(&lat),
            "latitude",
            "must be between -90 and 90",
        );
    }
    if let Some(lon) = longitude {
        c.check(
            (-180.0..=180.0).contains(&lon),
            "longitude",
            "must be between -180 and 180",
        );
    }
    if let Some(s) = starts_at {
        c.check(
            s > OffsetDateTime::now_utc(),
            "starts_at",
            "must be in the future",
        );
    }
    if let Some(tz) = timezone {
        c.check(
            (1..=64).contains(&tz.len())
                && tz
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "/_+-".contains(ch)),
            "timezone",
            "must be an IANA time zone name such as Africa/Lagos",
        );
    }
    if let Some(m) = max_per_order {
        c.check((1..=100).contains(&m), "max_per_order", "must be 1 to 100");
    }
    if let Some(a) = age_restriction {
        c.check(
            (0..=100).contains(&a),
            "age_restriction",
            "must be 0 to 100",
        );
    }
}

impl Validate for EventInput {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        check_event(
            &mut c,
            Some(&self.title),
            Some(&self.description),
            Some(&self.category),
            [
                ("venue", Some(&self.venue)),
                ("address", Some(&self.address)),
                ("city", Some(&self.city)),
                ("country", Some(&self.country)),
            ],
            Some(self.latitude),
            Some(self.longitude),
            Some(self.starts_at),
            self.timezone.as_deref(),
            self.max_per_order,
            self.age_restriction,
        );
        c.check(
            self.ends_at > self.starts_at,
            "ends_at",
            "must be after starts_at",
        );
        c.finish()
    }
}

impl Validate for EventPatch {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        check_event(
            &mut c,
            self.title.as_deref(),
            self.description.as_deref(),
            self.category.as_deref(),
            [
                ("venue", self.venue.as_deref()),
                ("address", self.address.as_deref()),
                ("city", self.city.as_deref()),
                ("country", self.country.as_deref()),
            ],
            self.latitude,
            self.longitude,
            self.starts_at,
            self.timezone.as_deref(),
            self.max_per_order,
            self.age_restriction,
        );
        c.finish()
    }
}

impl From<EventInput> for EventFields {
    fn from(i: EventInput) -> Self {
        Self {
            title: i.title.trim().to_owned(),
            description: i.description.trim().to_owned(),
            category: i.category,
            venue: i.venue.trim().to_owned(),
            address: i.address.trim().to_owned(),
            city: i.city.trim().to_owned(),
            country: i.country.trim().to_owned(),
            latitude: i.latitude,
            longitude: i.longitude,
            starts_at: i.starts_at,
            ends_at: i.ends_at,
            timezone: i.timezone.unwrap_or_else(|| "Africa/Lagos".to_owned()),
            max_per_order: i.max_per_order.unwrap_or(10),
            age_restriction: i.age_restriction,
        }
    }
}

impl EventPatch {
    fn apply(self, f: &mut EventFields) -> AppResult<()> {
        let set = |slot: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *slot = v.trim().to_owned();
            }
        };
        set(&mut f.title, self.title);
        set(&mut f.description, self.description);
        set(&mut f.category, self.category);
        set(&mut f.venue, self.venue);
        set(&mut f.address, self.address);
        set(&mut f.city, self.city);
        set(&mut f.country, self.country);
        set(&mut f.timezone, self.timezone);
        if let Some(v) = self.latitude {
            f.latitude = v;
        }
        if let Some(v) = self.longitude {
            f.longitude = v;
        }
        if let Some(v) = self.starts_at {
            f.starts_at = v;
        }
        if let Some(v) = self.ends_at {
            // Moving the end into the past would end a running event and start its payout
            // clock early (API.md: 422 on `ends_at`).
            if v <= OffsetDateTime::now_utc() {
                return Err(AppError::validation("ends_at", "must not be in the past"));
            }
            f.ends_at = v;
        }
        if let Some(v) = self.max_per_order {
            f.max_per_order = v;
        }
        if self.age_restriction.is_some() {
            f.age_restriction = self.age_restriction;
        }
        if f.ends_at <= f.starts_at {
            return Err(AppError::validation("ends_at", "must be after starts_at"));
        }
        Ok(())
    }
}

/// A body that is either JSON, or multipart with a `data` JSON part and an optional `poster`
/// image part (checked by content, at most 5 MiB). Any other part is a 422.
pub struct EventPayload<T> {
    pub data: T,
    pub poster: Option<Image>,
}

impl<T> FromRequest<AppState> for EventPayload<T>
where
    T: DeserializeOwned + Validate + Send,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_multipart {
            let ValidatedJson(data) = ValidatedJson::<T>::from_request(req, state).await?;
            return Ok(EventPayload { data, poster: None });
        }
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| AppError::bad_request("malformed_multipart", e.body_text()))?;
        let mut data: Option<T> = None;
        let mut poster = None;
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "data" => {
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    data = Some(parse_json::<T>(&bytes)?);
                }
                "poster" => {
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    if bytes.len() > MAX_POSTER_BYTES {
                        return Err(AppError::validation("poster", "must be at most 5 MiB"));
                    }
                    let kind = ImageKind::sniff(&bytes).ok_or_else(|| {
                        AppError::validation("poster", "must be a JPEG, PNG or WebP image")
                    })?;
                    poster = Some(Image { bytes, kind });
                }
                other => {
                    return Err(AppError::validation(
                        if other.is_empty() { "multipart" } else { other },
                        "is not an accepted part (expected `data` and optionally `poster`)",
                    ));
                }
            }
        }
        let data = data.ok_or_else(|| AppError::validation("data", "is required"))?;
        data.validate().map_err(AppError::Validation)?;
        Ok(EventPayload { data, poster })
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::bad_request("malformed_multipart", e.body_text())
    }
}

// ---- handlers ----

/// Create an event (organizers only). JSON, or multipart with `data` (JSON) and `poster`.
#[utoipa::path(post, path = "/events/create", tag = "events", security(("bearer" = [])),
    request_body(content = EventInput, description = "JSON, or multipart/form-data with a `data` JSON part and an optional `poster` image part"),
    responses(
        (status = 201, body = EventResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`not_organizer`", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (also a poster that is not JPEG/PNG/WebP or over 5 MiB)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "image storage failed; no event was created", body = Problem, content_type = "application/problem+json"),
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
    Ok((StatusCode::CREATED, Json(event.into())))
}

/// An event with its tiers. Public.
#[utoipa::path(get, path = "/events/{event_id}", tag = "events",
    params(("event_id" = Uuid, Path)),
    responses(
        (status = 200, body = EventResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_event(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> AppResult<Json<EventResponse>> {
    let (event, tiers) = events::with_tiers(&state, id).await?;
    let mut body = EventResponse::from(event);
    body.tiers = Some(tiers.into_iter().map(TierResponse::from).collect());
    Ok(Json(body))
}

/// Change an event (its organizer only; not once cancelled or ended).
#[utoipa::path(patch, path = "/events/{event_id}", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)),
    request_body(content = EventPatch, description = "JSON, or multipart with `data` and a replacement `poster`"),
    responses(
        (status = 200, body = EventResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`not_organizer`, `not_event_owner`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`event_cancelled`, `event_ended`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
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
        organizer.user_id,
        id,
        |fields| patch.apply(fields),
        payload.poster,
    )
    .await?;
    Ok(Json(event.into()))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: Option<String>,
}

impl Validate for CancelRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
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
    request_body = CancelRequest,
    responses(
        (status = 202, body = EventResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`not_organizer`, `not_event_owner`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`event_cancelled` (cancelled already), `payout_started`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_event(
    State(state): State<AppState>,
    organizer: Organizer,
    PathId(id): PathId,
    body: bytes::Bytes,
) -> AppResult<(StatusCode, Json<EventResponse>)> {
    // The body is optional: none at all means no reason.
    let request: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        parse_json(&body)?
    };
    request.validate().map_err(AppError::Validation)?;
    let reason = request.reason;
    let event = events::cancel(&state, organizer.user_id, id, reason.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(event.into())))
}

/// Refund one paid order in full (the event's organizer only), before the event's payout has
/// started. Its tickets are void at once; the refund is sent to Paystack by a job and the
/// order becomes `refunded` once Paystack has processed it.
#[utoipa::path(post, path = "/events/{event_id}/orders/{order_id}/refund", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path), ("order_id" = Uuid, Path)),
    request_body = CancelRequest,
    responses(
        (status = 202, description = "The order, `refund_pending`", body = OrderResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`not_organizer`, `not_event_owner`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown event, or no such order of this event", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_not_refundable` (not paid), `payout_started`", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
async fn refund_order(
    State(state): State<AppState>,
    organizer: Organizer,
    PathIds(event_id, order_id): PathIds,
    body: bytes::Bytes,
) -> AppResult<(StatusCode, Json<OrderResponse>)> {
    if !body.is_empty() {
        let request: CancelRequest = parse_json(&body)?;
        request.validate().map_err(AppError::Validation)?;
    }
    let order =
        crate::service::refunds::refund_order(&state, organizer.user_id, event_id, order_id)
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
    fn validate(&self) -> Result<(), Vec<FieldError>> {
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
        (status = 422, body = Problem, content_type = "application/problem+json"),
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
                let mut r = EventResponse::from(e);
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
        (status = 400, description = "`invalid_query`", body = Problem, content_type = "application/problem+json"),
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
        items: page.items.into_iter().map(EventResponse::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
