-- Extensions the schema relies on. All ship with Debian's PostgreSQL server package.
--   citext:        case-insensitive text, so `Ada@Example.com` and `ada@example.com` are one email.
--   cube + earthdistance: great-circle distance with a GiST index for nearby-event search.
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS cube;
CREATE EXTENSION IF NOT EXISTS earthdistance;
