-- Mail leaves through an outbox in PostgreSQL (`service::mail`), not a Redis queue: a mail
-- is queued in the database (often in the transaction that made it necessary), so losing
-- Redis loses no mail (DESIGN.md "Redis is never the only copy").
--
-- Senders on every instance claim up to 100 due messages at a time (SKIP LOCKED), in
-- priority order (reset codes, then tickets and money, then the rest), write the batch they
-- form into `batch_id` BEFORE sending, and send them to Resend as one request under that
-- batch's idempotency key; a batch whose sender died is sent again, same rows, same key.
CREATE TABLE mail_outbox (
    id              UUID PRIMARY KEY,
    kind            TEXT NOT NULL,
    priority        SMALLINT NOT NULL,
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    html            TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    -- Stable per message: the same message queued twice is queued once.
    idempotency_key TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    batch_id        UUID,
    -- A message a batch could not carry (Resend refused the batch) is sent on its own.
    solo            BOOLEAN NOT NULL DEFAULT false,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- queued: when it may go; sending: when its batch may be sent again.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    provider_id     TEXT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    CONSTRAINT mail_outbox_idempotency_key_key UNIQUE (idempotency_key)
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (priority, next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX mail_outbox_batch_idx ON mail_outbox (batch_id, next_attempt_at)
    WHERE status = 'sending';
