-- The security review's limits (docs/security.md).

-- The purchase counts a buyer's unpaid holds and free tickets on one event
-- (`repo::orders::buyer_usage`) on every attempt: this index keeps that to the buyer's own
-- few rows. Partial, so it carries only pending and free orders, not every paid one.
CREATE INDEX orders_buyer_usage_idx ON orders (user_id, event_id)
    WHERE status = 'pending' OR total_amount = 0;
