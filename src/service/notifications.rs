//! The messages we send, each with an HTML and a text part and a deterministic idempotency
//! key, handed to the mail queue.

use uuid::Uuid;

use crate::{
    clients::mail::{Email, OutboxEntry, OutboxMailer},
    domain::status::RefundReason,
    error::AppResult,
    state::AppState,
};

use crate::security::signing::escape_html as escape;

fn layout(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;max-width:560px;margin:auto\">\
         <h2>{}</h2>{body_html}<p style=\"color:#888;font-size:12px\">Ticketing</p></body></html>",
        escape(title)
    )
}

pub fn welcome(user_id: Uuid, to: &str, first_name: &str) -> Email {
    let subject = "Welcome to Ticketing".to_owned();
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>Your account is ready. Find an event and get your tickets.</p>",
                escape(first_name)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nYour account is ready. Find an event and get your tickets.\n"
        ),
        subject,
        kind: "welcome".to_owned(),
        idempotency_key: format!("welcome/{user_id}"),
    }
}

pub fn password_reset_otp(reset_id: Uuid, to: &str, first_name: &str, otp: &str) -> Email {
    let subject = "Your password reset code".to_owned();
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>Your code is <strong style=\"font-size:24px;letter-spacing:4px\">{otp}</strong>.</p>\
                 <p>It is valid for 10 minutes. If you did not ask to reset your password, ignore this mail.</p>",
                escape(first_name)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nYour password reset code is {otp}.\nIt is valid for 10 minutes. \
             If you did not ask to reset your password, ignore this mail.\n"
        ),
        subject,
        kind: "password_reset".to_owned(),
        idempotency_key: format!("password-otp/{reset_id}"),
    }
}

/// One ticket as its mail shows it.
pub struct MailedTicket {
    pub tier: String,
    pub access_key: String,
    /// The QR image this service serves for it (`GET /tickets/qr/<token>.png`).
    pub qr_url: String,
}

/// The event as a ticket mail names it.
pub struct MailedEvent<'a> {
    pub title: &'a str,
    pub venue: &'a str,
    pub starts_at: time::OffsetDateTime,
}

/// Every ticket of the order with its access key and a QR code that decodes to it, and the
/// event's details. The QR codes are linked images, not `data:` images (mail clients drop
/// those) nor attachments (Resend's batch endpoint drops those).
pub fn tickets_issued(
    order_id: Uuid,
    to: &str,
    first_name: &str,
    event: &MailedEvent<'_>,
    tickets: &[MailedTicket],
) -> Email {
    let subject = format!("Your tickets for {}", event.title);
    let when = event
        .starts_at
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let items_html: String = tickets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "<li style=\"margin-bottom:16px\">Ticket {} ({}): <code>{}</code><br>\
                 <img src=\"{}\" width=\"200\" height=\"200\" alt=\"QR code of ticket {}\"></li>",
                i + 1,
                escape(&t.tier),
                escape(&t.access_key),
                escape(&t.qr_url),
                i + 1
            )
        })
        .collect();
    let items_text: String = tickets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "  Ticket {} ({}): {}\n    QR code: {}\n",
                i + 1,
                t.tier,
                t.access_key,
                t.qr_url
            )
        })
        .collect();
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>Your {} ticket(s) for <strong>{}</strong>, {} at {}:</p>\
                 <ul style=\"list-style:none;padding:0\">{items_html}</ul>\
                 <p>Show a ticket's QR code at the door.</p>",
                escape(first_name),
                tickets.len(),
                escape(event.title),
                escape(&when),
                escape(event.venue),
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nYour {} ticket(s) for {}, {when} at {}:\n{items_text}\nShow a ticket's QR code at the door.\n",
            tickets.len(),
            event.title,
            event.venue,
        ),
        subject,
        kind: "tickets_issued".to_owned(),
        idempotency_key: format!("ticket-mail/{order_id}"),
    }
}

/// A purchase that did not go through (the hold expired, or the payment was declined): the
/// tickets went back on sale.
pub fn purchase_failed(
    order_id: Uuid,
    to: &str,
    first_name: &str,
    event_title: &str,
    expired: bool,
) -> Email {
    let subject = format!("Your order for {event_title} was not completed");
    let why = if expired {
        "The time to pay for it ran out before a payment arrived"
    } else {
        "The payment was declined"
    };
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>{why}, so the tickets you held for <strong>{}</strong> were \
                 released. Nothing was charged. You can buy again while tickets last.</p>",
                escape(first_name),
                escape(event_title)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\n{why}, so the tickets you held for {event_title} were released. Nothing was charged. You can buy again while tickets last.\n"
        ),
        subject,
        kind: "purchase_failed".to_owned(),
        idempotency_key: format!("purchase-failed/{order_id}"),
    }
}

/// Naira from kobo, for people: `₦12,345.67`.
fn naira(kobo: i64) -> String {
    let whole = (kobo / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("₦{grouped}.{:02}", kobo % 100)
}

/// Why an order is refunded, in words a buyer understands.
fn refund_reason_text(reason: RefundReason) -> &'static str {
    match reason {
        RefundReason::EventCancelled => "the event was cancelled",
        RefundReason::OrganizerRefund => "the organizer refunded your order",
        RefundReason::LatePaymentSoldOut => "your payment arrived after the tickets were gone",
        RefundReason::EventEnded => "your payment arrived after the event ended",
        RefundReason::AmountMismatch => "the amount paid did not match the order",
        RefundReason::Unknown => "your order could not be honoured",
    }
}

/// The holder is told that a refund is on its way (the tickets, if any, are void).
pub fn refund_started(
    refund_id: Uuid,
    to: &str,
    first_name: &str,
    event_title: &str,
    amount: i64,
    reason: RefundReason,
) -> Email {
    let subject = format!("Your refund for {event_title}");
    let why = refund_reason_text(reason);
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>We are refunding {} for <strong>{}</strong> because {why}.                  Any tickets of this order are no longer valid.</p>",
                escape(first_name),
                naira(amount),
                escape(event_title)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nWe are refunding {} for {event_title} because {why}.              Any tickets of this order are no longer valid.\n",
            naira(amount)
        ),
        subject,
        kind: "refund_started".to_owned(),
        idempotency_key: format!("refund-started/{refund_id}"),
    }
}

/// The refund reached the buyer's bank.
pub fn refund_processed(
    refund_id: Uuid,
    to: &str,
    first_name: &str,
    event_title: &str,
    amount: i64,
) -> Email {
    let subject = format!("Refund completed: {event_title}");
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>Your refund of {} for <strong>{}</strong> has been processed.</p>",
                escape(first_name),
                naira(amount),
                escape(event_title)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nYour refund of {} for {event_title} has been processed.\n",
            naira(amount)
        ),
        subject,
        kind: "refund_processed".to_owned(),
        idempotency_key: format!("refund-processed/{refund_id}"),
    }
}

/// The payout bank account changed: sent to the login email and to the organizer email as
/// it was before the change, so a stolen session cannot change both silently.
pub fn payout_account_changed(
    organizer_id: Uuid,
    changed_at: i64,
    to: &str,
    organizer_name: &str,
    bank_name: &str,
    last4: &str,
    cooldown_hours: u64,
) -> Email {
    let subject = "Your payout bank account was changed".to_owned();
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>The payout account of <strong>{}</strong> is now {} ending in {}.</p>                 <p>Payouts to it start after {cooldown_hours} hours. If you did not make this                  change, change your password and contact us at once.</p>",
                escape(organizer_name),
                escape(bank_name),
                escape(last4)
            ),
        ),
        text: format!(
            "The payout account of {organizer_name} is now {bank_name} ending in {last4}.\n             Payouts to it start after {cooldown_hours} hours. If you did not make this change,              change your password and contact us at once.\n"
        ),
        subject,
        kind: "payout_account_changed".to_owned(),
        idempotency_key: format!("payout-account/{organizer_id}/{changed_at}/{to}"),
    }
}

/// The development outbox (no Resend key): what was "sent", newest first.
pub async fn dev_outbox(state: &AppState) -> AppResult<Vec<OutboxEntry>> {
    Ok(OutboxMailer::list(&state.redis).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_html() {
        let m = welcome(Uuid::nil(), "a@b.co", "<script>");
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(m.text.contains("<script>"));
        assert_eq!(m.idempotency_key, format!("welcome/{}", Uuid::nil()));
    }

    #[test]
    fn naira_groups_thousands_and_keeps_kobo() {
        assert_eq!(naira(1_234_567), "₦12,345.67");
        assert_eq!(naira(5), "₦0.05");
        assert_eq!(naira(100_000_000), "₦1,000,000.00");
    }
}
