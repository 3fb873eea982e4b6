//! Opaque keyset cursors: `(starts_at, id)` of the last item of a page, base64url-encoded.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use uuid::Uuid;

pub fn encode(at: OffsetDateTime, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}_{}", at.unix_timestamp_nanos(), id))
}

pub fn decode(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = raw.split_once('_')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    // Only times PostgreSQL can compare with ours; anything else was not made by us.
    if !(1970..=9999).contains(&at.year()) {
        return None;
    }
    Some((at, Uuid::parse_str(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(at, id)), Some((at, id)));
        assert_eq!(decode("not-a-cursor"), None);
        assert_eq!(decode(""), None);
    }
}
