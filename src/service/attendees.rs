//! The organizer's view of who is coming: `GET /events/:id/orders` and the attendee CSV.

use bytes::Bytes;
use futures::Stream;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::{
    domain::{
        cursor,
        ids::{EventId, UserId},
    },
    error::AppResult,
    repo::{self, attendees::OrderWithBuyer},
    service::events,
    state::AppState,
};

/// An event's orders with their buyers, newest first (owner only).
pub async fn orders(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
    statuses: &[String],
    after: Option<(time::OffsetDateTime, Uuid)>,
    limit: i64,
) -> AppResult<(Vec<OrderWithBuyer>, Option<String>)> {
    let event = events::load(state, event_id.into()).await?;
    events::ensure_owner_explained(state, &event, user_id.into()).await?;
    let rows = repo::attendees::orders(&state.db, event.id, statuses, after, limit + 1).await?;
    Ok(cursor::cut(rows, limit, |r| {
        (r.order.created_at, r.order.id)
    }))
}

/// Tickets read per query while streaming the CSV.
const CSV_PAGE: i64 = 1_000;

const CSV_HEADER: &str =
    "ticket_id,tier,buyer_name,buyer_email,status,checked_in_at,order_reference\n";

/// The attendee CSV (owner only, checked before the first byte): one row per ticket, read
/// `CSV_PAGE` tickets at a time, so memory stays flat whatever the event's size. A database
/// error mid-way ends the stream with an error, which cuts the response short (the client
/// sees a truncated transfer, never a file that looks complete).
pub async fn csv(
    state: &AppState,
    user_id: UserId,
    event_id: EventId,
) -> AppResult<impl Stream<Item = Result<Bytes, sqlx::Error>> + Send + 'static> {
    let event = events::load(state, event_id.into()).await?;
    events::ensure_owner_explained(state, &event, user_id.into()).await?;
    let db = state.db.clone();
    let event_id = event.id;
    // (cursor, done): `None` before the header is sent.
    let start: (Option<Option<Uuid>>, bool) = (None, false);
    Ok(futures::stream::try_unfold(start, move |(after, done)| {
        let db = db.clone();
        async move {
            if done {
                return Ok(None);
            }
            let Some(after) = after else {
                return Ok(Some((
                    Bytes::from_static(CSV_HEADER.as_bytes()),
                    (Some(None), false),
                )));
            };
            let rows = repo::attendees::tickets_page(&db, event_id, after, CSV_PAGE).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let last = rows.last().map(|r| r.ticket_id);
            let full = rows.len() as i64 == CSV_PAGE;
            let mut chunk = String::with_capacity(rows.len() * 128);
            for r in rows {
                let checked_in = r
                    .checked_in_at
                    .and_then(|t| t.format(&Rfc3339).ok())
                    .unwrap_or_default();
                let cells = [
                    r.ticket_id.to_string(),
                    r.tier,
                    r.buyer_name,
                    r.buyer_email,
                    r.status,
                    checked_in,
                    r.order_reference,
                ];
                let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                chunk.push_str(&line.join(","));
                chunk.push('\n');
            }
            Ok(Some((Bytes::from(chunk), (Some(last), !full))))
        }
    }))
}

/// One CSV cell (RFC 4180 quoting), safe to open in a spreadsheet: a cell that starts with
/// `=`, `+`, `-` or `@` would be run as a formula, so it gets a leading `'` (API.md).
pub fn csv_cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("Ada Obi"), "Ada Obi");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+234"), "'+234");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
