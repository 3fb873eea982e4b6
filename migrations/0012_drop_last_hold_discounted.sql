-- The one-statement hold reported its discount decision through this scratch column. Holds
-- are now decided in batches under the tier row's lock (`service::batcher`), the discount per
-- order in Rust, so nothing writes or reads it.
ALTER TABLE ticket_tiers DROP COLUMN last_hold_discounted;
