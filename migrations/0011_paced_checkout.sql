-- The paced checkout (DESIGN.md "Paystack's limits shape the flash sale"): while Paystack's
-- initialize budget is spent, a purchase keeps its seats and answers 201 without a checkout
-- link; the order is marked here and a paced initializer (`service::checkout`) creates the
-- link within the budget, then `expires_at` counts from the link.
--
-- checkout_deferred_at: when the purchase handed the link over to the initializer (NULL: the
--   purchase makes its link itself, inline).
-- checkout_claim, checkout_claimed_until: an initializer's claim (its token, and until when),
--   renewed right before each Paystack call, so two instances never initialize one order.
ALTER TABLE orders
    ADD COLUMN checkout_deferred_at   TIMESTAMPTZ,
    ADD COLUMN checkout_claim         UUID,
    ADD COLUMN checkout_claimed_until TIMESTAMPTZ;

-- The initializer's queue: deferred holds still without a link, oldest first.
CREATE INDEX orders_checkout_deferred_idx ON orders (checkout_deferred_at)
    WHERE status = 'pending' AND authorization_url IS NULL AND checkout_deferred_at IS NOT NULL;
