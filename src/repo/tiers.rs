//! Ticket tiers: creation, discounts, and the guarded seat counter.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::repo::events::TierRow;

pub struct NewTier<'a> {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: &'a str,
    pub price: i64,
    pub quantity: i32,
    pub benefits: &'a [String],
    pub discount: Option<(i64, i32, OffsetDateTime)>,
}

pub async fn insert(db: impl PgExecutor<'_>, t: NewTier<'_>) -> sqlx::Result<TierRow> {
    sqlx::query_as!(
        TierRow,
        r#"INSERT INTO ticket_tiers (id, event_id, name, price, quantity, benefits, discount_price,
                                     discount_quantity, discount_expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           RETURNING id, event_id, name, price, currency, quantity, taken, benefits, discount_price,
                     discount_quantity, discount_taken, discount_expires_at"#,
        t.id,
        t.event_id,
        t.name,
        t.price,
        t.quantity,
        t.benefits,
        t.discount.map(|d| d.0),
        t.discount.map(|d| d.1),
        t.discount.map(|d| d.2),
    )
    .fetch_one(db)
    .await
}

/// A tier of the event by name or id (API.md accepts either).
pub async fn find(
    db: impl PgExecutor<'_>,
    event_id: Uuid,
    name_or_id: &str,
) -> sqlx::Result<Option<TierRow>> {
    let id = Uuid::parse_str(name_or_id).ok();
    sqlx::query_as!(
        TierRow,
        r#"SELECT id, event_id, name, price, currency, quantity, taken, benefits, discount_price,
                  discount_quantity, discount_taken, discount_expires_at
           FROM ticket_tiers
           WHERE event_id = $1 AND (name = $2 OR id = $3)
           ORDER BY (name = $2) DESC LIMIT 1"#,
        event_id,
        name_or_id,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn remove_discount(db: impl PgExecutor<'_>, tier_id: Uuid) -> sqlx::Result<TierRow> {
    sqlx::query_as!(
        TierRow,
        r#"UPDATE ticket_tiers
           SET discount_price = NULL, discount_quantity = NULL, discount_expires_at = NULL
           WHERE id = $1
           RETURNING id, event_id, name, price, currency, quantity, taken, benefits, discount_price,
                     discount_quantity, discount_taken, discount_expires_at"#,
        tier_id
    )
    .fetch_one(db)
    .await
}

/// Gives `quantity` seats back (and the discount allowance they used). Called only by the
/// statement that clears an order's `holds_seats`, in the same transaction.
pub async fn release_seats(
    db: impl PgExecutor<'_>,
    tier_id: Uuid,
    quantity: i32,
    discounted: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE ticket_tiers
           SET taken = taken - $2,
               discount_taken = GREATEST(discount_taken - CASE WHEN $3 THEN $2 ELSE 0 END, 0)
           WHERE id = $1"#,
        tier_id,
        quantity,
        discounted
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Takes `quantity` seats back for a late payment, at the price already paid; false when
/// there are not enough left. A discounted order takes its discount allowance again too (its
/// own went back when the hold ended): without it, discounted sales could exceed
/// `discount_quantity`. If the allowance is gone, the payment cannot be honoured.
pub async fn retake_seats(
    db: impl PgExecutor<'_>,
    tier_id: Uuid,
    quantity: i32,
    discounted: bool,
) -> sqlx::Result<bool> {
    let res = sqlx::query!(
        r#"UPDATE ticket_tiers
           SET taken = taken + $2,
               discount_taken = discount_taken + CASE WHEN $3 THEN $2 ELSE 0 END
           WHERE id = $1 AND taken + $2 <= quantity
             AND (NOT $3 OR discount_taken + $2 <= discount_quantity)"#,
        tier_id,
        quantity,
        discounted
    )
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

#[derive(Debug)]
pub struct TierSales {
    pub tier_id: Uuid,
    pub name: String,
    pub quantity: i32,
    pub taken: i32,
    pub sold: i64,
    pub held: i64,
    pub gross_amount: i64,
}

/// Per tier: seats sold (paid orders), held (pending orders), and the gross the ledger holds
/// for its orders (everything ever paid, refunded or not, as the event total counts it).
pub async fn sales(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<Vec<TierSales>> {
    sqlx::query_as!(
        TierSales,
        r#"SELECT t.id AS tier_id, t.name, t.quantity, t.taken,
                  COALESCE(SUM(o.quantity) FILTER (WHERE o.status = 'paid'), 0)::bigint AS "sold!",
                  COALESCE(SUM(o.quantity) FILTER (WHERE o.status = 'pending'), 0)::bigint AS "held!",
                  COALESCE((SELECT SUM(l.amount) FROM ledger_entries l JOIN orders lo ON lo.id = l.order_id
                            WHERE lo.tier_id = t.id AND l.kind = 'gross'), 0)::bigint AS "gross_amount!"
           FROM ticket_tiers t
           LEFT JOIN orders o ON o.event_id = t.event_id AND o.tier_id = t.id
           WHERE t.event_id = $1
           GROUP BY t.id
           ORDER BY t.created_at, t.id"#,
        event_id
    )
    .fetch_all(db)
    .await
}

/// Tickets of the event checked in at the door.
pub async fn checked_in(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM tickets WHERE event_id = $1 AND status = 'used'"#,
        event_id
    )
    .fetch_one(db)
    .await
}
