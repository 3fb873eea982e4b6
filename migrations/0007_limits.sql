-- The security review's limits (docs/security.md).

-- The purchase counts a buyer's unpaid holds and free tickets on one event
-- (`repo::orders::buyer_usage`) on every attempt: this index keeps that to the buyer's own
-- few rows. Partial, so it carries only pending and free orders, not every paid one.
CREATE INDEX orders_buyer_usage_idx ON orders (user_id, event_id)
    WHERE status = 'pending' OR total_amount = 0;

-- The sweeper claims expired holds per instance before asking Paystack about them (a lease,
-- so two instances never verify the same hold), and a hold whose verify kept failing for
-- HOLD_TTL_SECONDS past its expiry is expired anyway but marked `reverify`: the sweeper keeps
-- asking Paystack about it until it answers, so a payment that did happen is still settled
-- or refunded (`service::sweeper`).
ALTER TABLE orders
    ADD COLUMN verify_claimed_until TIMESTAMPTZ,
    ADD COLUMN reverify BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX orders_reverify_idx ON orders (expires_at) WHERE reverify;

-- The attendee CSV and the door list page through an event's tickets by id (v7: creation
-- order); equality lookups by event keep working off the same index.
DROP INDEX tickets_event_idx;
CREATE INDEX tickets_event_idx ON tickets (event_id, id);
