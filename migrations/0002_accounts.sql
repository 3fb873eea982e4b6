-- Accounts: users, two-factor recovery codes and password resets.

CREATE TABLE users (
    id                 UUID PRIMARY KEY,
    -- citext: unique regardless of case; the app also trims and lower-cases on the way in.
    email              CITEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    first_name         TEXT NOT NULL,
    last_name          TEXT NOT NULL,
    -- Bumped by a password change or reset: every token issued before stops working.
    token_version      INTEGER NOT NULL DEFAULT 0,
    -- TOTP secret, AES-256-GCM under TOTP_ENCRYPTION_KEY; on only when two_factor_enabled.
    totp_secret        BYTEA,
    two_factor_enabled BOOLEAN NOT NULL DEFAULT false,
    -- The last TOTP time step accepted: a code is good once (RFC 6238 §5.2).
    totp_last_step     BIGINT,
    -- A deleted user keeps the row (orders and tickets point at it) with personal data erased.
    deleted_at         TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_two_factor_has_secret CHECK (NOT two_factor_enabled OR totp_secret IS NOT NULL)
);

-- Ten per confirmation of 2FA, each usable once. SHA-256 of the normalized code: the codes
-- carry ~50 bits of randomness, so a fast hash is enough.
CREATE TABLE recovery_codes (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id),
    code_hash  TEXT NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT recovery_codes_user_code_key UNIQUE (user_id, code_hash)
);

-- One row per reset started. The OTP is stored as an HMAC under a server key (6 digits are
-- too few for a plain hash); the reset token as SHA-256 (it is 256 random bits).
CREATE TABLE password_resets (
    id               UUID PRIMARY KEY,
    user_id          UUID NOT NULL REFERENCES users (id),
    otp_hash         TEXT NOT NULL,
    otp_expires_at   TIMESTAMPTZ NOT NULL,
    failed_attempts  INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    -- Set when replaced by a newer OTP, voided by too many wrong tries, or verified.
    closed_at        TIMESTAMPTZ,
    token_hash       TEXT,
    token_expires_at TIMESTAMPTZ,
    token_used_at    TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT password_resets_token_hash_key UNIQUE (token_hash)
);

-- At most one open OTP per user: starting a new one closes the old in the same transaction,
-- and this index makes a race between two resends fail instead of leaving two open.
CREATE UNIQUE INDEX password_resets_one_open_per_user
    ON password_resets (user_id) WHERE closed_at IS NULL;
