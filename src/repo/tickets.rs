//! Tickets as their holders and the door see them.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TicketRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub access_key: String,
    pub status: String,
    pub checked_in_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub event_id: Uuid,
    pub event_title: String,
    pub event_starts_at: OffsetDateTime,
    pub event_venue: String,
    pub tier_id: Uuid,
    pub tier_name: String,
}

/// The user's tickets, newest first, keyset-paginated on (created_at, id) descending.
pub async fn for_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<TicketRow>> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.id, t.order_id, t.access_key, t.status, t.checked_in_at, t.created_at,
                  e.id AS event_id, e.title AS event_title, e.starts_at AS event_starts_at,
                  e.venue AS event_venue, tt.id AS tier_id, tt.name AS tier_name
           FROM tickets t
           JOIN events e ON e.id = t.event_id
           JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.user_id = $1
             AND ($2::timestamptz IS NULL OR (t.created_at, t.id) < ($2, $3::uuid))
           ORDER BY t.created_at DESC, t.id DESC
           LIMIT $4"#,
        user_id,
        before.map(|b| b.0),
        before.map(|b| b.1),
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn for_order(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Vec<TicketRow>> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT t.id, t.order_id, t.access_key, t.status, t.checked_in_at, t.created_at,
                  e.id AS event_id, e.title AS event_title, e.starts_at AS event_starts_at,
                  e.venue AS event_venue, tt.id AS tier_id, tt.name AS tier_name
           FROM tickets t
           JOIN events e ON e.id = t.event_id
           JOIN ticket_tiers tt ON tt.id = t.tier_id
           WHERE t.order_id = $1
           ORDER BY t.seat"#,
        order_id
    )
    .fetch_all(db)
    .await
}
