//! The ledger: append-only entries in integer kobo, once per (order, kind) or per payout.
//!
//! A sale writes gross, paystack_fee, platform_fee and organizer_share (gross = platform fee +
//! organizer share; Paystack's fee is the platform's cost). An order entering refund_pending
//! gets the reversal of gross, platform fee and share (Paystack keeps its fee). A payout
//! writes `payout` against the event's share. Figures are sums of these rows, nothing else.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{domain::money::Money, repo::orders::OrderRow};

/// The sale's ledger entries, once per order (unique per order and kind).
pub async fn record_sale(
    db: impl PgExecutor<'_>,
    order: &OrderRow,
    organizer_id: Uuid,
    gross: Money,
    paystack_fee: Money,
    platform_fee: Money,
) -> sqlx::Result<()> {
    let kinds = ["gross", "paystack_fee", "platform_fee", "organizer_share"];
    // gross = platform fee + organizer share, by construction.
    let amounts = [gross, paystack_fee, platform_fee, gross - platform_fee].map(Money::as_kobo);
    let ids: Vec<Uuid> = kinds.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    sqlx::query!(
        r#"INSERT INTO ledger_entries (id, order_id, event_id, organizer_id, kind, amount, currency)
           SELECT id, $2, $3, $4, kind, amount, $7
           FROM UNNEST($1::uuid[], $5::text[], $6::bigint[]) AS t(id, kind, amount)
           ON CONFLICT DO NOTHING"#,
        &ids,
        order.id,
        order.event_id,
        organizer_id,
        &kinds,
        &amounts,
        order.currency
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Reverses the sale entries of orders that entered refund_pending and creates their
/// refunds, in the caller's transaction (the one that moved them). Returns the orders that
/// got a refund now (the others had one already).
pub async fn reverse_and_refund(
    db: &mut sqlx::PgConnection,
    order_ids: &[Uuid],
    note: Option<&str>,
) -> sqlx::Result<Vec<Uuid>> {
    // Internal rows, never exposed: v4 ids generated in the statement keep it set-based.
    sqlx::query!(
        r#"INSERT INTO ledger_entries (id, order_id, event_id, organizer_id, kind, amount, currency)
           SELECT gen_random_uuid(), l.order_id, l.event_id, l.organizer_id,
                  CASE l.kind WHEN 'gross' THEN 'refund'
                              WHEN 'platform_fee' THEN 'platform_fee_reversal'
                              ELSE 'organizer_share_reversal' END,
                  -l.amount, l.currency
           FROM ledger_entries l
           WHERE l.order_id = ANY($1) AND l.kind IN ('gross', 'platform_fee', 'organizer_share')
           ON CONFLICT DO NOTHING"#,
        order_ids
    )
    .execute(&mut *db)
    .await?;
    sqlx::query_scalar!(
        r#"INSERT INTO refunds (id, order_id, amount, currency, reason, note)
           SELECT gen_random_uuid(), id, COALESCE(paid_amount, 0), currency,
                  COALESCE(refund_reason, 'unknown'), $2
           FROM orders WHERE id = ANY($1) AND status = 'refund_pending'
           ON CONFLICT (order_id) DO NOTHING
           RETURNING order_id"#,
        order_ids,
        note
    )
    .fetch_all(&mut *db)
    .await
}

/// The organizer's share of an event still in the ledger: sales minus reversals minus
/// payouts. Zero once the event is paid out.
pub async fn event_share(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(amount), 0)::bigint AS "n!" FROM ledger_entries
           WHERE event_id = $1 AND kind IN ('organizer_share', 'organizer_share_reversal')"#,
        event_id
    )
    .fetch_one(db)
    .await
}

/// Draws the payout's amount down from the event's share, once per payout.
pub async fn record_payout(
    db: impl PgExecutor<'_>,
    payout_id: Uuid,
    event_id: Uuid,
    organizer_id: Uuid,
    amount: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO ledger_entries (id, payout_id, event_id, organizer_id, kind, amount)
           VALUES ($1, $2, $3, $4, 'payout', $5)
           ON CONFLICT DO NOTHING"#,
        Uuid::now_v7(),
        payout_id,
        event_id,
        organizer_id,
        -amount
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An event's money as `GET /events/:id/sales` shows it, all from the ledger.
#[derive(Debug)]
pub struct EventTotals {
    pub gross_amount: i64,
    pub platform_fee_amount: i64,
    pub refunded_amount: i64,
    pub net_amount: i64,
}

pub async fn event_totals(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<EventTotals> {
    sqlx::query_as!(
        EventTotals,
        r#"SELECT
             COALESCE(SUM(amount) FILTER (WHERE kind = 'gross'), 0)::bigint AS "gross_amount!",
             COALESCE(SUM(amount) FILTER (WHERE kind IN ('platform_fee', 'platform_fee_reversal')), 0)::bigint
                 AS "platform_fee_amount!",
             COALESCE(-SUM(amount) FILTER (WHERE kind = 'refund'), 0)::bigint AS "refunded_amount!",
             COALESCE(SUM(amount) FILTER (WHERE kind IN ('organizer_share', 'organizer_share_reversal')), 0)::bigint
                 AS "net_amount!"
           FROM ledger_entries WHERE event_id = $1"#,
        event_id
    )
    .fetch_one(db)
    .await
}

/// One organizer event's share and where it stands, for the organizer's balance.
#[derive(Debug)]
pub struct EventBalance {
    pub event_id: Uuid,
    /// Sales minus reversals (before any payout).
    pub share: i64,
    pub payable: bool,
    pub paid_out: i64,
}

/// Per event of the organizer: its share, whether it is past `ends_at + delay` (payable),
/// and what was paid out successfully.
pub async fn organizer_balances(
    db: impl PgExecutor<'_>,
    organizer_id: Uuid,
    now: time::OffsetDateTime,
    payout_delay_seconds: f64,
) -> sqlx::Result<Vec<EventBalance>> {
    sqlx::query_as!(
        EventBalance,
        r#"SELECT e.id AS "event_id!",
                  COALESCE((SELECT SUM(l.amount) FROM ledger_entries l WHERE l.event_id = e.id
                            AND l.kind IN ('organizer_share', 'organizer_share_reversal')), 0)::bigint AS "share!",
                  (e.ends_at + make_interval(secs => $3) <= $2) AS "payable!",
                  COALESCE((SELECT p.amount FROM payouts p WHERE p.event_id = e.id AND p.status = 'success'), 0)::bigint
                      AS "paid_out!"
           FROM events e WHERE e.organizer_id = $1"#,
        organizer_id,
        now,
        payout_delay_seconds
    )
    .fetch_all(db)
    .await
}
