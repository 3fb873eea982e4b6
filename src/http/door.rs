//! The offline door: `GET /events/:id/door` (the list scanners keep) and
//! `POST /events/:id/tickets/validate/batch` (the scans they upload later).

use axum::{
    Json,
    extract::{RawQuery, State},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::{
        ids::{EventId, UserId},
        status::TicketStatus,
    },
    error::{AppResult, FieldError},
    http::extract::{AuthUser, Checks, PathId, Validate, ValidatedJson, query_pairs},
    service::door::{self, Scan, ScanOutcome},
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(door_list))
        .routes(routes!(validate_batch))
}

#[derive(Serialize, ToSchema)]
pub struct DoorTier {
    pub id: Uuid,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct DoorEntryResponse {
    pub ticket_id: Uuid,
    /// Hex SHA-256 of the access key (the key itself never leaves the server here).
    pub key_hash: String,
    pub tier: DoorTier,
    pub status: TicketStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_in_at: Option<OffsetDateTime>,
}

#[derive(Serialize, ToSchema)]
pub struct DoorListResponse {
    pub key_hash_alg: &'static str,
    pub items: Vec<DoorEntryResponse>,
    pub next_cursor: Option<String>,
    /// On the last page; pass it later as `since` for only what changed.
    pub sync_token: Option<String>,
}

/// The door list (the event's organizer only): every ticket of the event, one entry each,
/// with the hash of its access key. Pages of up to 1,000 by `cursor`; the last page carries
/// `sync_token`, which as `since` later returns only the entries changed after it (new
/// tickets, voids, check-ins).
#[utoipa::path(get, path = "/events/{event_id}/door", tag = "tickets", security(("bearer" = [])),
    params(
        ("event_id" = Uuid, Path),
        ("since" = Option<String>, Query, description = "a `sync_token` from an earlier walk"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = DoorListResponse),
        (status = 400, description = "`invalid_query`: a `since` or `cursor` this server did not issue"),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
    ))]
async fn door_list(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(event_id): PathId,
    RawQuery(query): RawQuery,
) -> AppResult<Json<DoorListResponse>> {
    let (mut since, mut cursor) = (None, None);
    for (k, v) in query_pairs(query.as_deref(), &["since", "cursor"])? {
        match k.as_str() {
            "since" => since = Some(v),
            _ => cursor = Some(v),
        }
    }
    let page = door::door_list(
        &state,
        UserId(user.id),
        EventId(event_id),
        since.as_deref().filter(|s| !s.is_empty()),
        cursor.as_deref().filter(|c| !c.is_empty()),
    )
    .await?;
    Ok(Json(DoorListResponse {
        key_hash_alg: "sha256",
        items: page
            .items
            .into_iter()
            .map(|e| DoorEntryResponse {
                ticket_id: e.ticket_id,
                key_hash: e.key_hash,
                tier: DoorTier {
                    id: e.tier_id,
                    name: e.tier_name,
                },
                status: e.status,
                checked_in_at: e.checked_in_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
        sync_token: page.sync_token,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanInput {
    pub access_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    pub gate: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1–500 scans.
    pub scans: Vec<ScanInput>,
}

impl Validate for BatchRequest {
    fn validate(&self, now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let latest = now + time::Duration::minutes(5);
        let mut checks = Checks::new();
        checks.check(
            (1..=500).contains(&self.scans.len()),
            "scans",
            "must hold 1 to 500 scans",
        );
        for (i, s) in self.scans.iter().enumerate() {
            checks
                .check(
                    (1..=128).contains(&s.access_key.len()),
                    &format!("scans[{i}].access_key"),
                    "must be 1 to 128 characters",
                )
                .check(
                    (1..=64).contains(&s.gate.chars().count()),
                    &format!("scans[{i}].gate"),
                    "must be 1 to 64 characters",
                )
                .check(
                    s.scanned_at <= latest,
                    &format!("scans[{i}].scanned_at"),
                    "may not be more than 5 minutes in the future",
                )
                .check(
                    s.scanned_at.year() >= 2000,
                    &format!("scans[{i}].scanned_at"),
                    "is not a plausible scan time",
                );
        }
        checks.finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct ScanResult {
    pub access_key: String,
    /// `admitted`, `duplicate`, `void`, `not_for_event` or `unknown`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<Uuid>,
    /// For a duplicate: when and where the ticket was admitted.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_checked_in_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_gate: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<ScanResult>,
}

/// Scans made offline, uploaded later (the event's organizer only). Applied in `scanned_at`
/// order across every upload: the earliest scan of a ticket is its admission, every other
/// scan of it a `duplicate` naming that one's time and gate. A scan is identified by
/// `(access_key, scanned_at, gate)`; uploading it again answers it again. Results come in
/// the order sent.
#[utoipa::path(post, path = "/events/{event_id}/tickets/validate/batch", tag = "tickets", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)), request_body = BatchRequest,
    responses(
        (status = 200, body = BatchResponse),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 422, description = "`validation_failed`: 1–500 scans, `gate` 1–64 characters, `scanned_at` at most 5 minutes ahead"),
    ))]
async fn validate_batch(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(event_id): PathId,
    ValidatedJson(body): ValidatedJson<BatchRequest>,
) -> AppResult<Json<BatchResponse>> {
    let scans = body
        .scans
        .into_iter()
        .map(|s| Scan {
            access_key: s.access_key,
            scanned_at: s.scanned_at,
            gate: s.gate,
        })
        .collect();
    let applied = door::validate_batch(&state, UserId(user.id), EventId(event_id), scans).await?;
    let results = applied
        .into_iter()
        .map(|(scan, outcome)| {
            let mut r = ScanResult {
                access_key: scan.access_key,
                result: "unknown",
                ticket_id: None,
                first_checked_in_at: None,
                first_gate: None,
            };
            match outcome {
                ScanOutcome::Admitted { ticket_id } => {
                    r.result = "admitted";
                    r.ticket_id = Some(ticket_id);
                }
                ScanOutcome::Duplicate {
                    ticket_id,
                    first_checked_in_at,
                    first_gate,
                } => {
                    r.result = "duplicate";
                    r.ticket_id = Some(ticket_id);
                    r.first_checked_in_at = Some(first_checked_in_at);
                    r.first_gate = Some(first_gate);
                }
                ScanOutcome::Void { ticket_id } => {
                    r.result = "void";
                    r.ticket_id = Some(ticket_id);
                }
                ScanOutcome::NotForEvent => r.result = "not_for_event",
                ScanOutcome::Unknown => {}
            }
            r
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}
