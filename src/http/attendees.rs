//! `GET /events/:id/orders` and `GET /events/:id/attendees.csv`: who bought, for the event's
//! organizer.

use axum::{
    Json,
    body::Body,
    extract::{RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    domain::{
        ids::{EventId, UserId},
        status::OrderStatus,
    },
    error::AppResult,
    http::{
        extract::{AuthUser, Page, PathId, bad_query, query_pairs},
        responses::OrderResponse,
    },
    service::attendees,
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(event_orders))
        .routes(routes!(attendees_csv))
}

#[derive(Serialize, ToSchema)]
pub struct Buyer {
    pub name: String,
    pub email: String,
}

/// An order as the organizer lists it: the order (without its tickets) and its buyer.
#[derive(Serialize, ToSchema)]
pub struct EventOrder {
    #[serde(flatten)]
    pub order: OrderResponse,
    pub buyer: Buyer,
}

#[derive(Serialize, ToSchema)]
pub struct EventOrderList {
    pub items: Vec<EventOrder>,
    pub next_cursor: Option<String>,
}

/// The event's orders with their buyers, newest first (its organizer only). `status` may
/// repeat (`?status=paid&status=refunded`). Tickets are not listed here; the attendee CSV
/// has one row per ticket.
#[utoipa::path(get, path = "/events/{event_id}/orders", tag = "events", security(("bearer" = [])),
    params(
        ("event_id" = Uuid, Path),
        ("status" = Option<Vec<OrderStatus>>, Query, description = "repeatable"),
        ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1–100, default 20"),
    ),
    responses(
        (status = 200, body = EventOrderList),
        (status = 400, description = "`invalid_query`: an unknown status, limit or cursor"),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 404, description = "no such event"),
    ))]
async fn event_orders(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(event_id): PathId,
    RawQuery(query): RawQuery,
) -> AppResult<Json<EventOrderList>> {
    let (mut statuses, mut limit, mut cursor) = (Vec::new(), None, None);
    for (k, v) in query_pairs(query.as_deref(), &["status", "cursor", "limit"])? {
        match k.as_str() {
            "status" => {
                let status = OrderStatus::parse(&v)
                    .ok_or_else(|| bad_query(format!("unknown status {v:?}")))?;
                if statuses.len() >= 7 {
                    return Err(bad_query("too many statuses"));
                }
                statuses.push(status.as_str().to_owned());
            }
            "cursor" => cursor = Some(v),
            _ => limit = Some(v),
        }
    }
    let page = Page::parse(limit.as_deref(), cursor.as_deref())?;
    let (rows, next_cursor) = attendees::orders(
        &state,
        UserId(user.id),
        EventId(event_id),
        &statuses,
        page.after,
        page.limit,
    )
    .await?;
    Ok(Json(EventOrderList {
        items: rows
            .into_iter()
            .map(|r| EventOrder {
                order: OrderResponse::without_tickets(r.order),
                buyer: Buyer {
                    name: r.buyer_name,
                    email: r.buyer_email,
                },
            })
            .collect(),
        next_cursor,
    }))
}

/// Every ticket of the event, one CSV row each
/// (`ticket_id,tier,buyer_name,buyer_email,status,checked_in_at,order_reference`), streamed
/// (its organizer only). Cells that start with `=`, `+`, `-` or `@` get a leading `'`.
#[utoipa::path(get, path = "/events/{event_id}/attendees.csv", tag = "events", security(("bearer" = [])),
    params(("event_id" = Uuid, Path)),
    responses(
        (status = 200, content_type = "text/csv", body = String),
        (status = 403, description = "`not_organizer`, `not_event_owner`"),
        (status = 404, description = "no such event"),
    ))]
async fn attendees_csv(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(event_id): PathId,
) -> AppResult<Response> {
    let rows = attendees::csv(&state, UserId(user.id), EventId(event_id)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"attendees-{event_id}.csv\""),
            ),
        ],
        Body::from_stream(rows),
    )
        .into_response())
}
