//! The reconciliation check: DESIGN.md's invariants as one read-only query, for an event,
//! an organizer or the whole platform. Used by `ticketing reconcile`, the tests and the
//! benchmark. Each row is one mismatch (or, with `stuck`, an item an operator should see).

use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `mismatch` (an invariant is broken) or `stuck` (a refund or payout not going through).
    pub severity: String,
    /// Which check: `tier_seats`, `discount_seats`, `paid_tickets`, `void_tickets`,
    /// `ledger_sale`, `ledger_reversal`, `ledger_stray`, `refund_missing`, `refund_state`,
    /// `payout_amount`, `paid_on_cancelled`, `refund_stuck`, `payout_stuck`.
    pub check: String,
    /// The tier, order, refund or payout concerned.
    pub subject: Uuid,
    pub event_id: Uuid,
    pub detail: String,
}

/// Every finding within the scope: an event, an organizer's events, or (both `None`) all.
pub async fn findings(
    db: impl PgExecutor<'_>,
    event_id: Option<Uuid>,
    organizer_id: Option<Uuid>,
) -> sqlx::Result<Vec<Finding>> {
    sqlx::query_as!(
        Finding,
        r#"WITH scope AS (
               SELECT id, status FROM events
               WHERE ($1::uuid IS NULL OR id = $1) AND ($2::uuid IS NULL OR organizer_id = $2)
           ), ord AS (
               SELECT o.* FROM orders o JOIN scope s ON s.id = o.event_id
           ), led AS (
               SELECT l.order_id,
                      count(*) FILTER (WHERE kind = 'gross') AS n_gross,
                      count(*) FILTER (WHERE kind = 'refund') AS n_refund,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'gross'), 0) AS gross,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'platform_fee'), 0) AS pf,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'paystack_fee'), 0) AS paystack_fee,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'organizer_share'), 0) AS share,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0) AS refund,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'platform_fee_reversal'), 0) AS pf_rev,
                      COALESCE(SUM(amount) FILTER (WHERE kind = 'organizer_share_reversal'), 0) AS share_rev,
                      count(*) FILTER (WHERE kind IN ('paystack_fee', 'platform_fee', 'organizer_share')) AS n_sale_rest,
                      bool_or(l.event_id <> o.event_id) AS wrong_event
               FROM ledger_entries l JOIN ord o ON o.id = l.order_id
               GROUP BY l.order_id
           )
           -- Seats: taken = seats of the orders holding them <= quantity (no oversell).
           SELECT 'mismatch' AS "severity!", 'tier_seats' AS "check!", t.id AS "subject!",
                  t.event_id AS "event_id!",
                  format('taken %s, held by orders %s, quantity %s', t.taken,
                         COALESCE(h.seats, 0), t.quantity) AS "detail!"
           FROM ticket_tiers t JOIN scope s ON s.id = t.event_id
           LEFT JOIN (SELECT tier_id, SUM(quantity) AS seats,
                             COALESCE(SUM(quantity) FILTER (WHERE discounted), 0) AS discounted
                      FROM ord WHERE holds_seats GROUP BY tier_id) h ON h.tier_id = t.id
           WHERE t.taken <> COALESCE(h.seats, 0) OR t.taken > t.quantity
           UNION ALL
           -- Discounted seats: what discounted orders hold = discount_taken <= discount_quantity.
           SELECT 'mismatch', 'discount_seats', t.id, t.event_id,
                  format('discount_taken %s, held by discounted orders %s, discount quantity %s',
                         t.discount_taken, COALESCE(h.discounted, 0), t.discount_quantity)
           FROM ticket_tiers t JOIN scope s ON s.id = t.event_id
           LEFT JOIN (SELECT tier_id, SUM(quantity) FILTER (WHERE discounted) AS discounted
                      FROM ord WHERE holds_seats GROUP BY tier_id) h ON h.tier_id = t.id
           WHERE t.discount_taken <> COALESCE(h.discounted, 0)
              OR t.discount_taken > COALESCE(t.discount_quantity, t.discount_taken)
           UNION ALL
           -- Every paid order has exactly `quantity` live tickets.
           SELECT 'mismatch', 'paid_tickets', o.id, o.event_id,
                  format('status %s, quantity %s, live tickets %s', o.status, o.quantity,
                         (SELECT count(*) FROM tickets k WHERE k.order_id = o.id AND k.status <> 'void'))
           FROM ord o
           WHERE o.status = 'paid'
             AND o.quantity <> (SELECT count(*) FROM tickets k WHERE k.order_id = o.id AND k.status <> 'void')
           UNION ALL
           -- Any other order has no live ticket (refunded orders' tickets are void).
           SELECT 'mismatch', 'void_tickets', o.id, o.event_id,
                  format('status %s with live tickets', o.status)
           FROM ord o
           WHERE o.status <> 'paid'
             AND EXISTS (SELECT 1 FROM tickets k WHERE k.order_id = o.id AND k.status <> 'void')
           UNION ALL
           -- Money received: one sale set per order that was ever paid; gross = amount paid =
           -- platform fee + organizer share; a paid order's gross = quantity × unit price.
           SELECT 'mismatch', 'ledger_sale', o.id, o.event_id,
                  format('status %s, paid %s, total %s, gross %s (x%s), platform fee %s, share %s, other sale entries %s',
                         o.status, o.paid_amount, o.total_amount, l.gross, COALESCE(l.n_gross, 0), l.pf,
                         l.share, l.n_sale_rest)
           FROM ord o LEFT JOIN led l ON l.order_id = o.id
           WHERE o.status IN ('paid', 'refund_pending', 'refunded')
             AND (l.order_id IS NULL OR l.n_gross <> 1 OR l.n_sale_rest <> 3
                  OR l.gross <> COALESCE(o.paid_amount, -1) OR l.gross <> l.pf + l.share
                  OR l.paystack_fee <> COALESCE(o.paystack_fee, 0)
                  OR (o.status = 'paid' AND l.gross <> o.total_amount))
           UNION ALL
           -- Reversal: an order owed back reverses exactly its sale; a paid order reverses nothing.
           SELECT 'mismatch', 'ledger_reversal', o.id, o.event_id,
                  format('status %s, gross %s / refund %s, platform fee %s / %s, share %s / %s',
                         o.status, l.gross, l.refund, l.pf, l.pf_rev, l.share, l.share_rev)
           FROM ord o JOIN led l ON l.order_id = o.id
           WHERE (o.status IN ('refund_pending', 'refunded')
                  AND (l.n_refund <> 1 OR l.refund <> -l.gross OR l.pf_rev <> -l.pf OR l.share_rev <> -l.share))
              OR (o.status = 'paid' AND (l.refund <> 0 OR l.pf_rev <> 0 OR l.share_rev <> 0 OR l.n_refund <> 0))
           UNION ALL
           -- No money entries for orders that never received any, none filed under another event.
           SELECT 'mismatch', 'ledger_stray', o.id, o.event_id,
                  format('status %s has ledger entries%s', o.status,
                         CASE WHEN l.wrong_event THEN ' under another event' ELSE '' END)
           FROM ord o JOIN led l ON l.order_id = o.id
           WHERE o.status NOT IN ('paid', 'refund_pending', 'refunded') OR l.wrong_event
           UNION ALL
           -- One refund per order owed back, for what was paid; only those orders have one.
           SELECT 'mismatch', 'refund_missing', o.id, o.event_id,
                  format('status %s, paid %s, refund %s', o.status, o.paid_amount,
                         COALESCE(r.amount::text, 'none'))
           FROM ord o LEFT JOIN refunds r ON r.order_id = o.id
           WHERE (o.status IN ('refund_pending', 'refunded')
                  AND (r.id IS NULL OR r.amount <> COALESCE(o.paid_amount, -1)))
              OR (o.status NOT IN ('refund_pending', 'refunded') AND r.id IS NOT NULL)
           UNION ALL
           -- refunded ⇔ its refund is processed.
           SELECT 'mismatch', 'refund_state', r.id, o.event_id,
                  format('order %s, refund %s', o.status, r.status)
           FROM ord o JOIN refunds r ON r.order_id = o.id
           WHERE (o.status = 'refunded') <> (r.status = 'processed')
           UNION ALL
           -- A payout pays exactly the event's share: share + reversals + payout entry = 0,
           -- and only events that were not cancelled are paid out.
           SELECT 'mismatch', 'payout_amount', p.id, p.event_id,
                  format('payout %s (%s), event %s, share left %s', p.amount, p.status, s.status,
                         (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries l WHERE l.event_id = p.event_id
                          AND l.kind IN ('organizer_share', 'organizer_share_reversal', 'payout')))
           FROM payouts p JOIN scope s ON s.id = p.event_id
           WHERE s.status = 'cancelled'
              OR (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries l WHERE l.event_id = p.event_id
                  AND l.kind IN ('organizer_share', 'organizer_share_reversal', 'payout')) <> 0
              OR (p.amount > 0) <> EXISTS (SELECT 1 FROM ledger_entries l WHERE l.payout_id = p.id)
              OR EXISTS (SELECT 1 FROM ledger_entries l WHERE l.payout_id = p.id AND l.amount <> -p.amount)
           UNION ALL
           -- A cancelled event keeps no sale: every paid order is owed back.
           SELECT 'mismatch', 'paid_on_cancelled', o.id, o.event_id, 'paid order on a cancelled event'
           FROM ord o JOIN scope s ON s.id = o.event_id
           WHERE s.status = 'cancelled' AND o.status = 'paid'
           UNION ALL
           -- Not mismatches, but money an operator must see: refunds that keep failing or wait
           -- for the buyer's bank details, payouts whose last attempt failed.
           SELECT 'stuck', 'refund_stuck', r.id, o.event_id,
                  format('refund of %s for order %s: %s after %s attempts: %s', r.amount, o.reference,
                         r.status, r.attempts, COALESCE(r.last_error, ''))
           FROM ord o JOIN refunds r ON r.order_id = o.id
           WHERE r.status IN ('failed', 'needs_attention')
              OR (r.status <> 'processed' AND (r.attempts >= 3 OR r.created_at < now() - interval '1 day'))
           UNION ALL
           SELECT 'stuck', 'payout_stuck', p.id, p.event_id,
                  format('payout of %s: %s, attempt %s: %s', p.amount, p.status, p.attempt,
                         COALESCE(p.last_error, ''))
           FROM payouts p JOIN scope s ON s.id = p.event_id
           WHERE p.status IN ('failed', 'reversed')
              OR (p.status = 'pending' AND p.created_at < now() - interval '1 day')"#,
        event_id,
        organizer_id
    )
    .fetch_all(db)
    .await
}
