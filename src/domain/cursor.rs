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

/// Keyset paging: the caller fetched `limit + 1` rows; keep `limit` of them and, when there
/// was one more, the cursor of the last row kept. The one place that cuts a page.
pub fn cut<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (OffsetDateTime, Uuid),
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|r| {
            let (at, id) = key(r);
            encode(at, id)
        });
        (rows, next)
    } else {
        (rows, None)
    }
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
        let rows: Vec<i64> = (0..3).collect();
        let key = |i: &i64| {
            (
                OffsetDateTime::from_unix_timestamp(*i).unwrap(),
                Uuid::nil(),
            )
        };
        let (page, next) = cut(rows.clone(), 2, key);
        assert_eq!(page, vec![0, 1]);
        assert_eq!(
            next.as_deref()
                .and_then(decode)
                .map(|c| c.0.unix_timestamp()),
            Some(1)
        );
        assert_eq!(cut(rows, 3, key).1, None);
        assert_eq!(decode(""), None);
    }
}
