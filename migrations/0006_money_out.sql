-- Money out: refunds, organizer payouts, the ledger kinds that reverse a sale or draw down
-- an organizer's share, and the columns that guard them. DESIGN.md "Refunds and revenue",
-- "Money details"; docs/money.md.

-- Set (under the event row's lock) when the event's payout row is created. Cancelling and
-- single-order refunds check it under the same lock, so "payout started" and "refunded"
-- can never both win. Also keeps the sweeper's "events due for payout" scan small.
ALTER TABLE events ADD COLUMN payout_started_at TIMESTAMPTZ;
CREATE INDEX events_payout_due_idx ON events (ends_at)
    WHERE status = 'scheduled' AND payout_started_at IS NULL;

-- When the payout bank account last changed: payouts to it wait
-- PAYOUT_ACCOUNT_COOLDOWN_SECONDS after this, so a stolen session cannot redirect money.
ALTER TABLE organizers ADD COLUMN bank_changed_at TIMESTAMPTZ;

-- One refund per order owed back, created in the same transaction that moves the order to
-- refund_pending (and writes the ledger reversal). The unique order_id is what makes "never
-- two refunds for one order" a database fact; the Paystack side is kept to one refund by
-- the `sending` state (a call whose answer may be lost is looked up before any resend).
--   pending         nothing at Paystack; due at next_attempt_at
--   sending         POST /refund issued; its outcome is unknown until looked up
--   processing      Paystack has it (paystack_refund_id), waiting for processed/failed
--   failed          Paystack's refund failed (money back in our balance); resent when due
--   needs_attention Paystack needs the buyer's bank details; re-checked, listed as stuck
--   processed       money back with the buyer; the order is `refunded`. Final.
CREATE TABLE refunds (
    id                      UUID PRIMARY KEY,
    order_id                UUID NOT NULL REFERENCES orders (id),
    amount                  BIGINT NOT NULL CHECK (amount >= 0),
    currency                TEXT NOT NULL DEFAULT 'NGN',
    reason                  TEXT NOT NULL,
    -- What the organizer (or the cancel) said; shown to the buyer as Paystack's customer note.
    note                    TEXT,
    status                  TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending',
                                'processing', 'failed', 'needs_attention', 'processed')),
    paystack_refund_id      BIGINT,
    attempts                INTEGER NOT NULL DEFAULT 0,
    last_error              TEXT,
    next_attempt_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A lease, not a lock: the one worker (job or sweeper, any instance) holding it drives the
    -- refund; a crashed holder's lease simply runs out. No transaction spans a Paystack call.
    locked_until            TIMESTAMPTZ,
    -- Who holds the lease: every write of a driver is guarded by it.
    lease_id                UUID,
    holder_mailed_at        TIMESTAMPTZ,
    processed_at            TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT refunds_order_id_key UNIQUE (order_id)
);
-- The sweeper's work list: unfinished refunds by due time.
CREATE INDEX refunds_due_idx ON refunds (next_attempt_at) WHERE status <> 'processed';

-- One payout per event, to the organizer's transfer recipient. Attempts live inside the row:
-- attempt n sends the transfer `payout-<id>-<n>`; attempt n+1 starts only once attempt n is
-- final (failed or reversed), and a `sent` attempt whose answer was lost is looked up by its
-- reference before anything is resent, so a retry can never pay twice.
--   status:         pending | success | failed (retrying) | reversed (retrying)
--   transfer_state: new (attempt not sent) | sent (outcome unknown) | queued (Paystack has it)
CREATE TABLE payouts (
    id              UUID PRIMARY KEY,
    event_id        UUID NOT NULL REFERENCES events (id),
    organizer_id    UUID NOT NULL REFERENCES organizers (id),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    currency        TEXT NOT NULL DEFAULT 'NGN',
    -- The recipient the current attempt pays (recorded: an account change does not move it).
    recipient_code  TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'success', 'failed', 'reversed')),
    attempt         INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    transfer_state  TEXT NOT NULL DEFAULT 'new' CHECK (transfer_state IN ('new', 'sent', 'queued')),
    transfer_code   TEXT,
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until    TIMESTAMPTZ,
    lease_id        UUID,
    settled_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT payouts_event_id_key UNIQUE (event_id)
);
CREATE INDEX payouts_due_idx ON payouts (next_attempt_at) WHERE status <> 'success';
CREATE INDEX payouts_organizer_idx ON payouts (organizer_id, created_at DESC);

-- Ledger kinds. A sale writes gross, paystack_fee, platform_fee, organizer_share (gross =
-- platform_fee + organizer_share). Entering refund_pending writes the reversal: refund
-- (-gross), platform_fee_reversal, organizer_share_reversal; Paystack keeps its fee, so
-- paystack_fee is never reversed (the platform's cost). A payout writes `payout`
-- (-amount) against the event's organizer share. Every kind is once per order or payout.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN (
    'gross', 'paystack_fee', 'platform_fee', 'organizer_share',
    'refund', 'platform_fee_reversal', 'organizer_share_reversal', 'payout'));
ALTER TABLE ledger_entries ADD COLUMN payout_id UUID REFERENCES payouts (id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_owner CHECK (
    (kind = 'payout') = (payout_id IS NOT NULL AND order_id IS NULL));
DROP INDEX ledger_entries_order_kind_key;
CREATE UNIQUE INDEX ledger_entries_order_kind_key ON ledger_entries (order_id, kind)
    WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX ledger_entries_payout_key ON ledger_entries (payout_id)
    WHERE payout_id IS NOT NULL;
CREATE INDEX ledger_entries_organizer_idx ON ledger_entries (organizer_id, event_id);

-- charge.success deliveries not yet settled: the sweeper re-drives them (a job that was
-- never queued, or aborted, must not leave a charged buyer with nothing).
CREATE INDEX payment_events_unprocessed_idx ON payment_events (received_at)
    WHERE processed_at IS NULL AND event_type = 'charge.success';

-- Orders owed back before this migration (late payments, cancelled events) get what the
-- money-out code gives every such order at the moment it enters refund_pending: entries for
-- the money received (a payment that never became a sale: no platform fee), the reversal of
-- the sale, and the refund that the sweeper will now drive. Internal rows: v4 ids.
INSERT INTO ledger_entries (id, order_id, event_id, organizer_id, kind, amount, currency)
SELECT gen_random_uuid(), o.id, o.event_id, e.organizer_id, k.kind,
       CASE k.kind WHEN 'platform_fee' THEN 0 WHEN 'paystack_fee' THEN COALESCE(o.paystack_fee, 0)
                   ELSE COALESCE(o.paid_amount, 0) END,
       o.currency
FROM orders o
JOIN events e ON e.id = o.event_id
CROSS JOIN (VALUES ('gross'), ('paystack_fee'), ('platform_fee'), ('organizer_share')) AS k(kind)
WHERE o.status = 'refund_pending'
  AND NOT EXISTS (SELECT 1 FROM ledger_entries l WHERE l.order_id = o.id AND l.kind = 'gross');

INSERT INTO ledger_entries (id, order_id, event_id, organizer_id, kind, amount, currency)
SELECT gen_random_uuid(), l.order_id, l.event_id, l.organizer_id,
       CASE l.kind WHEN 'gross' THEN 'refund' WHEN 'platform_fee' THEN 'platform_fee_reversal'
                   ELSE 'organizer_share_reversal' END,
       -l.amount, l.currency
FROM ledger_entries l
JOIN orders o ON o.id = l.order_id
WHERE o.status = 'refund_pending' AND l.kind IN ('gross', 'platform_fee', 'organizer_share')
ON CONFLICT DO NOTHING;

INSERT INTO refunds (id, order_id, amount, currency, reason)
SELECT gen_random_uuid(), id, COALESCE(paid_amount, 0), currency, COALESCE(refund_reason, 'unknown')
FROM orders WHERE status = 'refund_pending'
ON CONFLICT (order_id) DO NOTHING;
