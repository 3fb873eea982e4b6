-- Organizers, events and their ticket tiers.

-- A user becomes an organizer by creating this profile. Bank details are resolved with
-- Paystack (account_name is Paystack's) and never leave the service except the last 4 digits.
CREATE TABLE organizers (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    email          TEXT NOT NULL,
    phone          TEXT NOT NULL,
    bank_code      TEXT NOT NULL,
    bank_name      TEXT NOT NULL,
    account_number TEXT NOT NULL,
    account_name   TEXT NOT NULL,
    -- Paystack transfer recipient (RCP_...) used for payouts.
    recipient_code TEXT NOT NULL,
    description    TEXT,
    website        TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT organizers_user_id_key UNIQUE (user_id)
);

CREATE TABLE events (
    id               UUID PRIMARY KEY,
    organizer_id     UUID NOT NULL REFERENCES organizers (id),
    title            TEXT NOT NULL,
    description      TEXT NOT NULL,
    category         TEXT NOT NULL CHECK (category IN ('tech', 'health', 'music', 'comedy',
                         'nightlife', 'art', 'fashion', 'sports', 'business', 'conference', 'other')),
    venue            TEXT NOT NULL,
    address          TEXT NOT NULL,
    city             TEXT NOT NULL,
    country          TEXT NOT NULL,
    latitude         DOUBLE PRECISION NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude        DOUBLE PRECISION NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    starts_at        TIMESTAMPTZ NOT NULL,
    ends_at          TIMESTAMPTZ NOT NULL,
    timezone         TEXT NOT NULL DEFAULT 'Africa/Lagos',
    max_per_order    INTEGER NOT NULL DEFAULT 10 CHECK (max_per_order BETWEEN 1 AND 100),
    age_restriction  INTEGER CHECK (age_restriction BETWEEN 0 AND 100),
    poster_url       TEXT,
    poster_public_id TEXT,
    -- `ended` is not stored: an event whose ends_at has passed reads as ended.
    status           TEXT NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    cancel_reason    TEXT,
    cancelled_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_ends_after_start CHECK (ends_at > starts_at)
);

-- Browsing: upcoming scheduled events, soonest first, keyset-paginated on (starts_at, id).
CREATE INDEX events_browse_idx ON events (starts_at, id) WHERE status = 'scheduled';
-- The organizer's own events.
CREATE INDEX events_organizer_idx ON events (organizer_id, starts_at);
-- Nearby search: a GiST index over the point on the earth's surface (earthdistance's
-- ll_to_earth is immutable, so it can be indexed); earth_box(...) @> ll_to_earth(...) uses it,
-- then earth_distance orders and trims to the exact radius.
CREATE INDEX events_location_idx ON events USING gist (ll_to_earth(latitude, longitude))
    WHERE status = 'scheduled';

-- Ticket tiers. `taken` counts seats held by pending orders plus seats sold; the guarded
-- update `taken + qty <= quantity` is the one place that prevents overselling.
CREATE TABLE ticket_tiers (
    id                  UUID PRIMARY KEY,
    event_id            UUID NOT NULL REFERENCES events (id),
    name                TEXT NOT NULL,
    price               BIGINT NOT NULL CHECK (price >= 0),
    currency            TEXT NOT NULL DEFAULT 'NGN',
    quantity            INTEGER NOT NULL CHECK (quantity > 0),
    taken               INTEGER NOT NULL DEFAULT 0,
    benefits            TEXT[] NOT NULL DEFAULT '{}',
    discount_price      BIGINT,
    discount_quantity   INTEGER,
    discount_taken      INTEGER NOT NULL DEFAULT 0,
    discount_expires_at TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT ticket_tiers_event_name_key UNIQUE (event_id, name),
    CONSTRAINT ticket_tiers_taken_range CHECK (taken BETWEEN 0 AND quantity),
    CONSTRAINT ticket_tiers_discount_shape CHECK (
        (discount_price IS NULL AND discount_quantity IS NULL AND discount_expires_at IS NULL)
        OR (discount_price >= 0 AND discount_price < price
            AND discount_quantity > 0 AND discount_quantity <= quantity
            AND discount_expires_at IS NOT NULL)),
    CONSTRAINT ticket_tiers_discount_taken_range CHECK (discount_taken >= 0
        AND (discount_quantity IS NULL OR discount_taken <= discount_quantity))
);
