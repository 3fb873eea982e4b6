//! What an organizer sees of the people at their event: orders with their buyer, and one row
//! per ticket for the attendee CSV. Both page by keyset, so a 50,000-ticket event is read in
//! bounded pieces.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{domain::status::OrderStatus, repo::orders::OrderRow};

pub struct OrderWithBuyer {
    pub order: OrderRow,
    pub buyer_name: String,
    pub buyer_email: String,
}

/// An event's orders, newest first, after `(created_at, id)`; `statuses` empty means all.
pub async fn orders(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    statuses: &[String],
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<OrderWithBuyer>> {
    let (after_at, after_id) = after.unzip();
    let rows = sqlx::query!(
        r#"SELECT o.id, o.reference, o.user_id, o.event_id, o.tier_id, o.quantity, o.unit_price,
                  o.total_amount, o.discounted, o.currency, o.status AS "status: OrderStatus",
                  o.holds_seats, o.expires_at, o.authorization_url, o.paid_at, o.mail_queued_at,
                  o.created_at, u.first_name, u.last_name, u.email::text AS "email!"
           FROM orders o JOIN users u ON u.id = o.user_id
           WHERE o.event_id = $1
             AND (cardinality($2::text[]) = 0 OR o.status = ANY($2))
             AND ($3::timestamptz IS NULL OR (o.created_at, o.id) < ($3, $4))
           ORDER BY o.created_at DESC, o.id DESC
           LIMIT $5"#,
        event_id,
        statuses,
        after_at,
        after_id,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OrderWithBuyer {
            buyer_name: format!("{} {}", r.first_name, r.last_name)
                .trim()
                .to_owned(),
            buyer_email: r.email,
            order: OrderRow {
                id: r.id,
                reference: r.reference,
                user_id: r.user_id,
                event_id: r.event_id,
                tier_id: r.tier_id,
                quantity: r.quantity,
                unit_price: r.unit_price,
                total_amount: r.total_amount,
                discounted: r.discounted,
                currency: r.currency,
                status: r.status,
                holds_seats: r.holds_seats,
                expires_at: r.expires_at,
                authorization_url: r.authorization_url,
                paid_at: r.paid_at,
                mail_queued_at: r.mail_queued_at,
                created_at: r.created_at,
            },
        })
        .collect())
}

/// One attendee CSV row.
pub struct AttendeeRow {
    pub ticket_id: Uuid,
    pub tier: String,
    pub buyer_name: String,
    pub buyer_email: String,
    pub status: String,
    pub checked_in_at: Option<OffsetDateTime>,
    pub order_reference: String,
}

/// The event's tickets after `after` (by id), `limit` at a time.
pub async fn tickets_page(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<AttendeeRow>> {
    let rows = sqlx::query!(
        r#"SELECT t.id, tt.name AS tier, u.first_name, u.last_name, u.email::text AS "email!",
                  t.status, t.checked_in_at, o.reference
           FROM tickets t
           JOIN orders o ON o.id = t.order_id
           JOIN users u ON u.id = t.user_id
           JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.event_id = $1 AND ($2::uuid IS NULL OR t.id > $2)
           ORDER BY t.id
           LIMIT $3"#,
        event_id,
        after,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AttendeeRow {
            ticket_id: r.id,
            tier: r.tier,
            buyer_name: format!("{} {}", r.first_name, r.last_name)
                .trim()
                .to_owned(),
            buyer_email: r.email,
            status: r.status,
            checked_in_at: r.checked_in_at,
            order_reference: r.reference,
        })
        .collect())
}
