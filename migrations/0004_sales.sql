-- Selling tickets: orders (holds and payments), idempotency records, tickets, webhook
-- deliveries and the ledger. Money is BIGINT kobo, never negative where it is an amount;
-- ledger entries carry a sign.

CREATE TABLE orders (
    id                UUID PRIMARY KEY,
    -- Our Paystack reference: letters, digits and '-' only.
    reference         TEXT NOT NULL,
    user_id           UUID NOT NULL REFERENCES users (id),
    event_id          UUID NOT NULL REFERENCES events (id),
    -- No foreign key to ticket_tiers on purpose: the tier row is the hottest row during a
    -- flash sale, and a foreign key check would lock it (FOR KEY SHARE) on every insert.
    -- The purchase statement takes the seats from that very row, so the id is always valid.
    tier_id           UUID NOT NULL,
    quantity          INTEGER NOT NULL CHECK (quantity > 0),
    unit_price        BIGINT NOT NULL CHECK (unit_price >= 0),
    total_amount      BIGINT NOT NULL CHECK (total_amount >= 0),
    -- Whether the seats were taken from the discount allowance (given back with the seats).
    discounted        BOOLEAN NOT NULL DEFAULT false,
    currency          TEXT NOT NULL DEFAULT 'NGN',
    status            TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'expired',
                          'cancelled', 'refund_pending', 'refunded')),
    -- True while the order's seats are counted in ticket_tiers.taken: set when taken, cleared
    -- by the one guarded statement that gives them back. Makes "give back once" checkable.
    holds_seats       BOOLEAN NOT NULL DEFAULT true,
    expires_at        TIMESTAMPTZ NOT NULL,
    authorization_url TEXT,
    access_code       TEXT,
    paid_at           TIMESTAMPTZ,
    paid_amount       BIGINT CHECK (paid_amount >= 0),
    paystack_fee      BIGINT CHECK (paystack_fee >= 0),
    refund_reason     TEXT,
    -- Set once the ticket mail is queued (the sweeper re-drives paid orders without it).
    mail_queued_at    TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_reference_key UNIQUE (reference),
    CONSTRAINT orders_total_is_quantity_times_price CHECK (total_amount = unit_price * quantity)
);
-- The sweeper's work lists.
CREATE INDEX orders_pending_expiry_idx ON orders (expires_at) WHERE status = 'pending';
CREATE INDEX orders_paid_unmailed_idx ON orders (paid_at) WHERE status = 'paid' AND mail_queued_at IS NULL;
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);
CREATE INDEX orders_event_idx ON orders (event_id, status);

-- Idempotency-Key of POST /events/:id/tickets/purchase, scoped to the user, stored in the
-- same transaction as the order it produced.
CREATE TABLE idempotency_keys (
    user_id      UUID NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     UUID NOT NULL REFERENCES orders (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE TABLE tickets (
    id            UUID PRIMARY KEY,
    order_id      UUID NOT NULL REFERENCES orders (id),
    event_id      UUID NOT NULL REFERENCES events (id),
    tier_id       UUID NOT NULL,
    user_id       UUID NOT NULL REFERENCES users (id),
    -- 1..quantity: one ticket per seat; the unique key makes issuing idempotent.
    seat          INTEGER NOT NULL CHECK (seat > 0),
    -- 128+ bits of randomness, presented at the door (QR code).
    access_key    TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'used', 'void')),
    checked_in_at TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT tickets_order_seat_key UNIQUE (order_id, seat),
    CONSTRAINT tickets_access_key_key UNIQUE (access_key)
);
CREATE INDEX tickets_user_idx ON tickets (user_id, created_at DESC);
CREATE INDEX tickets_event_idx ON tickets (event_id, status);

-- Webhook deliveries, recorded once each (duplicates answer 200 and change nothing).
CREATE TABLE payment_events (
    id           UUID PRIMARY KEY,
    -- The delivery's identity: event type + data.id (+ status for refunds/transfers).
    identity     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    reference    TEXT,
    payload      JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at TIMESTAMPTZ,
    CONSTRAINT payment_events_identity_key UNIQUE (identity)
);

-- The ledger: per paid order, the gross, Paystack's fee, the platform fee and the
-- organizer's share (gross = platform_fee + organizer_share; Paystack's fee is borne by the
-- platform). Refunds and payouts add entries of their own kinds.
CREATE TABLE ledger_entries (
    id           UUID PRIMARY KEY,
    order_id     UUID REFERENCES orders (id),
    event_id     UUID NOT NULL REFERENCES events (id),
    organizer_id UUID NOT NULL REFERENCES organizers (id),
    kind         TEXT NOT NULL CHECK (kind IN ('gross', 'paystack_fee', 'platform_fee',
                     'organizer_share', 'refund', 'payout')),
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL DEFAULT 'NGN',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One entry of each sale kind per order: the payment job can run twice and write once.
CREATE UNIQUE INDEX ledger_entries_order_kind_key ON ledger_entries (order_id, kind)
    WHERE kind IN ('gross', 'paystack_fee', 'platform_fee', 'organizer_share');
CREATE INDEX ledger_entries_event_idx ON ledger_entries (event_id, kind);

-- Scratch column written by the purchase statement: whether the hold it just made took the
-- discounted price. SET expressions see the row before the update, RETURNING sees it after,
-- so this is how one statement both decides and reports the price, atomically.
ALTER TABLE ticket_tiers ADD COLUMN last_hold_discounted BOOLEAN NOT NULL DEFAULT false;
