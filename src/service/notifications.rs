//! The messages we send, each with an HTML and a text part and a deterministic idempotency
//! key, handed to the mail queue.

use uuid::Uuid;

use crate::clients::mail::Email;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

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

pub fn tickets_issued(
    order_id: Uuid,
    to: &str,
    first_name: &str,
    event_title: &str,
    access_keys: &[String],
) -> Email {
    let subject = format!("Your tickets for {event_title}");
    let items_html: String = access_keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("<li>Ticket {}: <code>{}</code></li>", i + 1, escape(k)))
        .collect();
    let items_text: String = access_keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("  Ticket {}: {k}\n", i + 1))
        .collect();
    Email {
        to: to.to_owned(),
        html: layout(
            &subject,
            &format!(
                "<p>Hi {},</p><p>Your {} ticket(s) for <strong>{}</strong>:</p><ul>{items_html}</ul>\
                 <p>Show the QR code from the app (GET /users/tickets) at the door.</p>",
                escape(first_name),
                access_keys.len(),
                escape(event_title)
            ),
        ),
        text: format!(
            "Hi {first_name},\n\nYour {} ticket(s) for {event_title}:\n{items_text}\nShow the QR code from the app at the door.\n",
            access_keys.len()
        ),
        subject,
        kind: "tickets_issued".to_owned(),
        idempotency_key: format!("ticket-mail/{order_id}"),
    }
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
}
