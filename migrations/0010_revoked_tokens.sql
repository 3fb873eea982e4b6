-- Logged-out tokens. PostgreSQL holds the truth; Redis holds a copy (`revoked:<jti>`) that
-- the authenticated hot path reads. Two things need the copy here (DESIGN.md "Redis is never
-- the only copy"): authentication falls back to PostgreSQL while Redis is down (so the door
-- keeps admitting), and a Redis that lost its data (it keeps nothing on disk) is refilled
-- from this table before its answers are trusted again (`service::auth`).
--
-- A row lives until the token would have expired anyway; the sweeper prunes the rest.
CREATE TABLE revoked_tokens (
    jti        UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    -- false until the Redis copy is confirmed; the sweeper copies what is still false.
    in_redis   BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The refill reads the unexpired rows; the prune deletes the expired ones.
CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at);
-- The sweeper's copy reads the few rows Redis missed.
CREATE INDEX revoked_tokens_pending_idx ON revoked_tokens (created_at) WHERE NOT in_redis;
