//! Extractors and request parsing shared by every handler: validated JSON bodies (our
//! problem shape on every rejection), authentication, path ids, the `Idempotency-Key`
//! header, query strings and paging. Handlers never parse these by hand.

use axum::{
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::header,
};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use time::OffsetDateTime;

use crate::{
    domain::clock::Now,
    error::{AppError, FieldError},
};

/// Request bodies check their own values after serde has checked their shape; `now` comes
/// from the service's clock (`domain::clock`), for "must be in the future".
pub trait Validate {
    fn validate(&self, now: OffsetDateTime) -> Result<(), Vec<FieldError>>;
}

/// Collects field errors for a `Validate` impl.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    pub fn finish(&mut self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.0))
        }
    }
}

/// A JSON body that is well-formed (else 400 `malformed_json`), has exactly the expected
/// fields with the expected types (else 422 naming the field) and passes `Validate` (else 422).
pub struct ValidatedJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidatedJson<T>
where
    S: Send + Sync + Now,
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_like::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(AppError::UnsupportedMediaType(
                "Send the body as JSON with `Content-Type: application/json`.".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        let value = parse_json::<T>(&bytes)?;
        value.validate(state.now()).map_err(AppError::Validation)?;
        Ok(ValidatedJson(value))
    }
}

/// A JSON body that may be left out entirely (then `T::default()`), else parsed and
/// validated like `ValidatedJson`: `POST /events/:id/cancel` with or without `{reason}`.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync + Now,
    T: DeserializeOwned + Validate + Default,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        let value = if bytes.is_empty() {
            T::default()
        } else {
            parse_json::<T>(&bytes)?
        };
        value.validate(state.now()).map_err(AppError::Validation)?;
        Ok(OptionalJson(value))
    }
}

/// Parses JSON the way every body is parsed: syntax errors are 400, shape errors are 422.
/// Every body is an object: serde's derive would otherwise read a struct from an array
/// (`["email", "password"]` logged in; found by schemathesis). Nested values keep serde's
/// leniency, which accepts nothing a client could not have sent as an object.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Well-formed but not an object is 422; not JSON at all stays a 400.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| json_error(String::new(), e))?;
        return Err(AppError::validation("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        json_error(path, inner)
    })?;
    de.end().map_err(|e| json_error(String::new(), e))?;
    // PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
    // Raw JSON cannot carry a literal NUL inside a string, only the escape \u0000.
    if has_nul_escape(bytes) {
        return Err(AppError::validation(
            "body",
            "must not contain NUL characters",
        ));
    }
    Ok(value)
}

/// Whether the JSON text has the escape `\u0000`: a backslash that starts an escape (one
/// preceded by an even number of backslashes), so `"C:\\u0000"` (a backslash, then text)
/// is not one.
fn has_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(br"\u0000")
            && bytes[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

fn json_error(path: String, err: serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            AppError::MalformedJson(format!("line {} column {}", err.line(), err.column()))
        }
        Category::Data => {
            let message = strip_position(&err.to_string());
            // serde names the offending key in the message for unknown/missing fields.
            let field = if path == "." || path.is_empty() {
                field_from_message(&message).unwrap_or_else(|| "body".to_owned())
            } else {
                path
            };
            AppError::Validation(vec![FieldError::new(field, message)])
        }
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn field_from_message(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

pub fn body_rejection(rejection: BytesRejection) -> AppError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::bad_request("unreadable_body", rejection.body_text())
    }
}

/// Just enough media-type parsing to accept `application/json; charset=utf-8` and
/// `application/problem+json` without pulling in a crate.
mod mime_like {
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence.is_empty() {
                Err(())
            } else {
                Ok(Essence(essence))
            }
        }
    }

    impl Essence {
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

/// The authenticated caller: a valid, unrevoked, current bearer token of a live user.
pub struct AuthUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub claims: crate::security::jwt::Claims,
}

fn bearer(parts: &axum::http::request::Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl axum::extract::FromRequestParts<crate::state::AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| AppError::not_authenticated("A bearer access token is required."))?;
        let (claims, email) = crate::service::auth::authenticate(state, token).await?;
        Ok(AuthUser {
            id: claims.sub,
            email,
            claims,
        })
    }
}

/// The caller when a token is sent, `None` when no `Authorization` header is; a bad token is
/// still 401.
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl axum::extract::FromRequestParts<crate::state::AppState> for MaybeAuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            Ok(MaybeAuthUser(Some(
                AuthUser::from_request_parts(parts, state).await?,
            )))
        } else {
            Ok(MaybeAuthUser(None))
        }
    }
}

/// An authenticated caller who has an organizer profile; anyone else gets 403 `not_organizer`.
pub struct Organizer {
    pub user_id: uuid::Uuid,
    pub organizer_id: uuid::Uuid,
}

impl axum::extract::FromRequestParts<crate::state::AppState> for Organizer {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let organizer_id = crate::service::organizers::id_of_user(state, user.id)
            .await?
            .ok_or_else(AppError::not_organizer)?;
        Ok(Organizer {
            user_id: user.id,
            organizer_id,
        })
    }
}

/// One id in the path. A segment that is not a UUID is a 404, like an unknown id (API.md).
pub struct PathId(pub uuid::Uuid);

/// Two ids in the path (`/events/{event_id}/orders/{order_id}`), each like `PathId`.
pub struct PathIds(pub uuid::Uuid, pub uuid::Uuid);

fn not_found_path() -> AppError {
    AppError::not_found("This resource")
}

fn parse_uuid(raw: &str) -> Result<uuid::Uuid, AppError> {
    uuid::Uuid::parse_str(raw).map_err(|_| not_found_path())
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found_path())?;
        parse_uuid(&raw).map(PathId)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathIds {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((a, b)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found_path())?;
        Ok(PathIds(parse_uuid(&a)?, parse_uuid(&b)?))
    }
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters (else 422).
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = v
            .to_str()
            .map_err(|_| AppError::validation("Idempotency-Key", "must be visible ASCII"))?;
        if key.is_empty() || key.len() > 255 {
            return Err(AppError::validation(
                "Idempotency-Key",
                "must be 1 to 255 characters",
            ));
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// A 400 `invalid_query`.
pub fn bad_query(detail: impl Into<String>) -> AppError {
    AppError::invalid_query(detail)
}

/// `?limit=` (default 20, 1..=100) and `?cursor=` of every list (API.md "lists").
pub struct Page {
    pub limit: i64,
    /// The keyset position the cursor encodes: `(time, id)` of the last item seen.
    pub after: Option<(time::OffsetDateTime, uuid::Uuid)>,
}

impl Page {
    pub fn parse(limit: Option<&str>, cursor_raw: Option<&str>) -> Result<Self, AppError> {
        let limit = match limit {
            None => 20,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| bad_query("limit must be a whole number from 1 to 100"))?,
        };
        let after = match cursor_raw {
            None | Some("") => None,
            Some(c) => Some(
                crate::domain::cursor::decode(c).ok_or_else(|| bad_query("cursor is not valid"))?,
            ),
        };
        Ok(Page { limit, after })
    }
}

/// More parameters than any route has use for (`category` repeats, with eleven values).
const MAX_QUERY_PAIRS: usize = 50;

/// Whether every `%XX` escape of a query string (and the text between) decodes to UTF-8.
fn decodes_to_utf8(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&out).is_ok()
}

/// An RFC 3339 time in a query string.
pub fn parse_time(field: &str, v: &str) -> Result<time::OffsetDateTime, AppError> {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad_query(format!("{field} must be an RFC 3339 time")))
}

/// The pairs of a query string, in order (a key may repeat); a parameter the route does not
/// know is a 400 `invalid_query`, so a typo is never silently ignored.
///
/// Percent-escapes must decode to UTF-8 (the decoder would otherwise put U+FFFD in their
/// place and answer a question nobody asked), and a query has at most `MAX_QUERY_PAIRS`.
pub fn query_pairs(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, AppError> {
    let raw = raw.unwrap_or_default();
    if !decodes_to_utf8(raw) {
        return Err(AppError::invalid_query(
            "the query string's escapes are not UTF-8",
        ));
    }
    if raw.split('&').filter(|p| !p.is_empty()).count() > MAX_QUERY_PAIRS {
        return Err(AppError::invalid_query(format!(
            "at most {MAX_QUERY_PAIRS} query parameters"
        )));
    }
    url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| {
            if known.contains(&k.as_ref()) {
                Ok((k.into_owned(), v.into_owned()))
            } else {
                Err(AppError::invalid_query(format!("unknown parameter {k:?}")))
            }
        })
        .collect()
}

/// The client's address: the socket peer, or — only with `TRUST_FORWARDED_FOR=true`, behind a
/// proxy we run — the last address in `X-Forwarded-For` (the one our proxy appended; earlier
/// entries are whatever the client claimed).
pub fn client_ip(
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
    trust_forwarded_for: bool,
) -> Option<std::net::IpAddr> {
    if trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|s| s.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|p| p.ip())
}

/// When the request timeout layer gives up on this request (set by it; without it, the
/// configured timeout from now).
#[derive(Clone, Copy)]
pub struct RequestDeadline(pub std::time::Instant);

impl axum::extract::FromRequestParts<crate::state::AppState> for RequestDeadline {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestDeadline>()
            .copied()
            .unwrap_or_else(|| {
                RequestDeadline(std::time::Instant::now() + state.config.request_timeout)
            }))
    }
}

/// The key that per-address limits count under: an IPv4 address as it is; an IPv6 address by
/// its /64, since one subscriber is usually given a whole /64 and could otherwise rotate
/// through 2^64 addresses; an IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn address_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The caller's address as per-address limits count it (`address_key`); `None` when the
/// server runs without connection info (never in `main`).
pub struct ClientAddress(pub Option<String>);

impl axum::extract::FromRequestParts<crate::state::AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientAddress(
            client_ip(&parts.headers, peer, state.config.trust_forwarded_for).map(address_key),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u8,
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:bbbb:cccc:dddd:eeee"),
            key("2001:db8:1:2::9")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let err = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.code(), "malformed_json");
        let err = parse_json::<Body>(br#"{"name":"a","count":1} trailing"#).unwrap_err();
        assert_eq!(err.code(), "malformed_json");
    }

    #[test]
    fn shape_errors_name_the_field() {
        let err = parse_json::<Body>(br#"{"name":"a","count":"x"}"#).unwrap_err();
        let AppError::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "count");

        let err = parse_json::<Body>(br#"{"name":"a","count":1,"extra":true}"#).unwrap_err();
        let AppError::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "extra");

        let err = parse_json::<Body>(br#"{"name":"a"}"#).unwrap_err();
        let AppError::Validation(errors) = err else {
            panic!("expected validation")
        };
        assert_eq!(errors[0].field, "count");
    }
}
