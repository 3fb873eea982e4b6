//! The response bodies several areas share (API.md's `event`, `tier`, `ticket`, `order`),
//! in one place so that handler modules never import each other.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::status::{EventStatus, OrderStatus, TicketStatus},
    error::AppResult,
    repo::{
        events::{EventRow, TierRow},
        orders::OrderRow,
        tickets::TicketRow,
        users::UserRow,
    },
    service::events,
    state::AppState,
};

#[derive(Serialize, ToSchema)]
pub struct OrganizerRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct DiscountResponse {
    pub price: i64,
    pub quantity: i32,
    pub remaining: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub struct TierResponse {
    pub id: Uuid,
    pub name: String,
    pub price: i64,
    pub currency: String,
    pub quantity: i32,
    pub available: i32,
    pub benefits: Vec<String>,
    pub discount: Option<DiscountResponse>,
}

impl From<TierRow> for TierResponse {
    fn from(t: TierRow) -> Self {
        let discount = match (t.discount_price, t.discount_quantity, t.discount_expires_at) {
            (Some(price), Some(quantity), Some(expires_at)) => Some(DiscountResponse {
                price,
                quantity,
                remaining: (quantity - t.discount_taken).max(0),
                expires_at,
            }),
            _ => None,
        };
        Self {
            id: t.id,
            name: t.name,
            price: t.price,
            currency: t.currency,
            quantity: t.quantity,
            available: (t.quantity - t.taken).max(0),
            benefits: t.benefits,
            discount,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventResponse {
    pub id: Uuid,
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
    pub timezone: String,
    pub max_per_order: i32,
    pub age_restriction: Option<i32>,
    pub organizer: OrganizerRef,
    pub poster_url: Option<String>,
    pub status: EventStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<TierResponse>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

impl EventResponse {
    /// The event as clients see it at `now` (the service's clock): `ended` is derived.
    pub fn at(e: EventRow, now: OffsetDateTime) -> Self {
        let status = events::status_of(&e, now);
        Self {
            id: e.id,
            title: e.title,
            description: e.description,
            category: e.category,
            venue: e.venue,
            address: e.address,
            city: e.city,
            country: e.country,
            latitude: e.latitude,
            longitude: e.longitude,
            starts_at: e.starts_at,
            ends_at: e.ends_at,
            timezone: e.timezone,
            max_per_order: e.max_per_order,
            age_restriction: e.age_restriction,
            organizer: OrganizerRef {
                id: e.organizer_id,
                name: e.organizer_name,
            },
            poster_url: e.poster_url,
            status,
            created_at: e.created_at,
            tiers: None,
            distance_km: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketEventRef {
    pub id: Uuid,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    pub venue: String,
}

#[derive(Serialize, ToSchema)]
pub struct TicketTierRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct TicketResponse {
    pub id: Uuid,
    pub event: TicketEventRef,
    pub tier: TicketTierRef,
    /// What the door scans.
    pub access_key: String,
    pub status: TicketStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_in_at: Option<OffsetDateTime>,
    /// Base64 PNG QR code of `access_key`.
    pub qr_code_png: String,
}

/// Renders tickets with their QR codes (on the blocking pool: QR encoding is CPU work).
pub async fn ticket_responses(rows: Vec<TicketRow>) -> AppResult<Vec<TicketResponse>> {
    let rendered = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|t| {
                let qr = crate::domain::qr::png_base64(&t.access_key);
                TicketResponse {
                    id: t.id,
                    event: TicketEventRef {
                        id: t.event_id,
                        title: t.event_title,
                        starts_at: t.event_starts_at,
                        venue: t.event_venue,
                    },
                    tier: TicketTierRef {
                        id: t.tier_id,
                        name: t.tier_name,
                    },
                    access_key: t.access_key,
                    status: t.status,
                    checked_in_at: t.checked_in_at,
                    qr_code_png: qr,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(anyhow::Error::from)?;
    Ok(rendered)
}

#[derive(Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    pub reference: String,
    pub event_id: Uuid,
    pub tier_id: Uuid,
    pub quantity: i32,
    pub unit_price: i64,
    pub total_amount: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub authorization_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Present once the order is paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets: Option<Vec<TicketResponse>>,
}

/// The order as clients see it, with its tickets once paid.
pub async fn order_response(state: &AppState, o: OrderRow) -> AppResult<OrderResponse> {
    let tickets = if o.status == OrderStatus::Paid {
        Some(ticket_responses(crate::service::tickets::of_order(state, o.id).await?).await?)
    } else {
        None
    };
    let mut order = OrderResponse::without_tickets(o);
    order.tickets = tickets;
    Ok(order)
}

impl OrderResponse {
    /// The order alone (lists that do not carry tickets).
    pub fn without_tickets(o: OrderRow) -> Self {
        OrderResponse {
            id: o.id,
            reference: o.reference,
            event_id: o.event_id,
            tier_id: o.tier_id,
            quantity: o.quantity,
            unit_price: o.unit_price,
            total_amount: o.total_amount,
            currency: o.currency,
            status: o.status,
            authorization_url: o.authorization_url,
            expires_at: o.expires_at,
            created_at: o.created_at,
            tickets: None,
        }
    }
}

/// A user as every endpoint shows it.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub two_factor_enabled: bool,
    pub is_organizer: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<UserRow> for UserResponse {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            two_factor_enabled: u.two_factor_enabled,
            is_organizer: u.is_organizer,
            created_at: u.created_at,
        }
    }
}
