//! The body of `POST /events/create` and `PATCH /events/:id`: API.md's `event input`, its
//! validation, and the JSON-or-multipart payload that may carry a poster.

use axum::{
    extract::{FromRequest, Multipart, Request},
    http::{StatusCode, header},
};
use serde::{Deserialize, de::DeserializeOwned};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    domain::{
        geo::snap_degrees,
        image::{Image, ImageKind, MAX_POSTER_BYTES},
    },
    error::{AppError, AppResult, FieldError},
    http::extract::{Checks, Validate, ValidatedJson, parse_json},
    repo::events::EventFields,
    service::events::CATEGORIES,
    state::AppState,
};

/// `event input` of API.md.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub title: String,
    pub description: String,
    pub category: String,
    pub venue: String,
    pub address: String,
    pub city: String,
    pub country: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub timezone: Option<String>,
    pub max_per_order: Option<i32>,
    pub age_restriction: Option<i32>,
}

/// Any field of `event input`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub venue: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    pub timezone: Option<String>,
    pub max_per_order: Option<i32>,
    pub age_restriction: Option<i32>,
}

fn text(c: &mut Checks, field: &str, value: Option<&str>, max: usize) {
    if let Some(v) = value {
        let n = v.trim().chars().count();
        c.check(
            (1..=max).contains(&n),
            field,
            &format!("must be 1 to {max} characters"),
        );
    }
}

/// The checks shared by create and patch; `None` means "not given".
#[allow(clippy::too_many_arguments)]
fn check_event(
    c: &mut Checks,
    title: Option<&str>,
    description: Option<&str>,
    category: Option<&str>,
    places: [(&str, Option<&str>); 4],
    latitude: Option<f64>,
    longitude: Option<f64>,
    starts_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
    timezone: Option<&str>,
    max_per_order: Option<i32>,
    age_restriction: Option<i32>,
) {
    text(c, "title", title, 200);
    text(c, "description", description, 10_000);
    for (field, v) in places {
        text(c, field, v, 200);
    }
    if let Some(cat) = category {
        c.check(
            CATEGORIES.contains(&cat),
            "category",
            "must be one of tech, health, music, comedy, nightlife, art, fashion, sports, business, conference, other",
        );
    }
    if let Some(lat) = latitude {
        c.check(
            (-90.0..=90.0).contains(&lat),
            "latitude",
            "must be between -90 and 90",
        );
    }
    if let Some(lon) = longitude {
        c.check(
            (-180.0..=180.0).contains(&lon),
            "longitude",
            "must be between -180 and 180",
        );
    }
    if let Some(s) = starts_at {
        c.check(s > now, "starts_at", "must be in the future");
    }
    if let Some(tz) = timezone {
        c.check(
            (1..=64).contains(&tz.len())
                && tz
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "/_+-".contains(ch)),
            "timezone",
            "must be an IANA time zone name such as Africa/Lagos",
        );
    }
    if let Some(m) = max_per_order {
        c.check((1..=100).contains(&m), "max_per_order", "must be 1 to 100");
    }
    if let Some(a) = age_restriction {
        c.check(
            (0..=100).contains(&a),
            "age_restriction",
            "must be 0 to 100",
        );
    }
}

impl Validate for EventInput {
    fn validate(&self, now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        check_event(
            &mut c,
            Some(&self.title),
            Some(&self.description),
            Some(&self.category),
            [
                ("venue", Some(&self.venue)),
                ("address", Some(&self.address)),
                ("city", Some(&self.city)),
                ("country", Some(&self.country)),
            ],
            Some(self.latitude),
            Some(self.longitude),
            Some(self.starts_at),
            now,
            self.timezone.as_deref(),
            self.max_per_order,
            self.age_restriction,
        );
        c.check(
            self.ends_at > self.starts_at,
            "ends_at",
            "must be after starts_at",
        );
        c.finish()
    }
}

impl Validate for EventPatch {
    fn validate(&self, now: OffsetDateTime) -> Result<(), Vec<FieldError>> {
        let mut c = Checks::new();
        check_event(
            &mut c,
            self.title.as_deref(),
            self.description.as_deref(),
            self.category.as_deref(),
            [
                ("venue", self.venue.as_deref()),
                ("address", self.address.as_deref()),
                ("city", self.city.as_deref()),
                ("country", self.country.as_deref()),
            ],
            self.latitude,
            self.longitude,
            self.starts_at,
            now,
            self.timezone.as_deref(),
            self.max_per_order,
            self.age_restriction,
        );
        c.finish()
    }
}

impl From<EventInput> for EventFields {
    fn from(i: EventInput) -> Self {
        Self {
            title: i.title.trim().to_owned(),
            description: i.description.trim().to_owned(),
            category: i.category,
            venue: i.venue.trim().to_owned(),
            address: i.address.trim().to_owned(),
            city: i.city.trim().to_owned(),
            country: i.country.trim().to_owned(),
            latitude: snap_degrees(i.latitude),
            longitude: snap_degrees(i.longitude),
            starts_at: i.starts_at,
            ends_at: i.ends_at,
            timezone: i.timezone.unwrap_or_else(|| "Africa/Lagos".to_owned()),
            max_per_order: i.max_per_order.unwrap_or(10),
            age_restriction: i.age_restriction,
        }
    }
}

impl EventPatch {
    pub fn apply(self, f: &mut EventFields, now: OffsetDateTime) -> AppResult<()> {
        let set = |slot: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *slot = v.trim().to_owned();
            }
        };
        set(&mut f.title, self.title);
        set(&mut f.description, self.description);
        set(&mut f.category, self.category);
        set(&mut f.venue, self.venue);
        set(&mut f.address, self.address);
        set(&mut f.city, self.city);
        set(&mut f.country, self.country);
        set(&mut f.timezone, self.timezone);
        if let Some(v) = self.latitude {
            f.latitude = snap_degrees(v);
        }
        if let Some(v) = self.longitude {
            f.longitude = snap_degrees(v);
        }
        if let Some(v) = self.starts_at {
            f.starts_at = v;
        }
        if let Some(v) = self.ends_at {
            // Moving the end into the past would end a running event and start its payout
            // clock early (API.md: 422 on `ends_at`).
            if v <= now {
                return Err(AppError::validation("ends_at", "must not be in the past"));
            }
            f.ends_at = v;
        }
        if let Some(v) = self.max_per_order {
            f.max_per_order = v;
        }
        if self.age_restriction.is_some() {
            f.age_restriction = self.age_restriction;
        }
        if f.ends_at <= f.starts_at {
            return Err(AppError::validation("ends_at", "must be after starts_at"));
        }
        Ok(())
    }
}

/// A body that is either JSON, or multipart with a `data` JSON part and an optional `poster`
/// image part (checked by content, at most 5 MiB). Any other part is a 422.
pub struct EventPayload<T> {
    pub data: T,
    pub poster: Option<Image>,
}

impl<T> FromRequest<AppState> for EventPayload<T>
where
    T: DeserializeOwned + Validate + Send,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_multipart {
            let ValidatedJson(data) = ValidatedJson::<T>::from_request(req, state).await?;
            return Ok(EventPayload { data, poster: None });
        }
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| AppError::malformed_multipart(e.body_text()))?;
        let mut data: Option<T> = None;
        let mut poster = None;
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "data" => {
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    data = Some(parse_json::<T>(&bytes)?);
                }
                "poster" => {
                    let bytes = field.bytes().await.map_err(multipart_error)?;
                    if bytes.len() > MAX_POSTER_BYTES {
                        return Err(AppError::validation("poster", "must be at most 5 MiB"));
                    }
                    let kind = ImageKind::sniff(&bytes).ok_or_else(|| {
                        AppError::validation("poster", "must be a JPEG, PNG or WebP image")
                    })?;
                    poster = Some(Image { bytes, kind });
                }
                other => {
                    return Err(AppError::validation(
                        if other.is_empty() { "multipart" } else { other },
                        "is not an accepted part (expected `data` and optionally `poster`)",
                    ));
                }
            }
        }
        let data = data.ok_or_else(|| AppError::validation("data", "is required"))?;
        data.validate(state.clock.now())
            .map_err(AppError::Validation)?;
        Ok(EventPayload { data, poster })
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::malformed_multipart(e.body_text())
    }
}
