//! Fake Cloudinary (§3): signed uploads under `/v1_1/{cloud}/image/upload` with the full
//! signature check (and its `String to sign` message), real image sniffing, versioned
//! `secure_url`s on the fake's own host served back on GET, destroy, and fault injection.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Multipart, Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use sha1::{Digest, Sha1};

use super::{Fault, listen, serve_on};

pub const CLOUD_NAME: &str = "fake-cloud";
pub const API_KEY: &str = "614335564976464";
pub const API_SECRET: &str = "cld_test_secret";

#[derive(Debug, Clone)]
pub struct Asset {
    pub public_id: String,
    pub version: u64,
    pub format: String,
    pub bytes: Vec<u8>,
    pub signature: String,
    pub secure_url: String,
}

#[derive(Default)]
struct Inner {
    assets: HashMap<String, Asset>,
    faults: VecDeque<Fault>,
    uploads: usize,
}

#[derive(Clone, Default)]
pub struct FakeCloudinary {
    inner: Arc<Mutex<Inner>>,
    pub base_url: String,
}

impl FakeCloudinary {
    pub async fn spawn() -> Self {
        let (listener, base_url) = listen().await;
        let fake = FakeCloudinary {
            base_url,
            ..Default::default()
        };
        let router = Router::new()
            .route("/v1_1/{cloud}/image/upload", post(upload))
            .route("/v1_1/{cloud}/image/destroy", post(destroy))
            .route("/res/{cloud}/image/upload/{version}/{*path}", get(deliver))
            .fallback(|| async { err(StatusCode::NOT_FOUND, "Resource not found") })
            .with_state(fake.clone());
        serve_on(listener, router);
        fake
    }

    pub fn assets(&self) -> Vec<Asset> {
        self.inner
            .lock()
            .unwrap()
            .assets
            .values()
            .cloned()
            .collect()
    }

    pub fn uploads(&self) -> usize {
        self.inner.lock().unwrap().uploads
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }
}

fn err(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message } }))).into_response()
}

/// §3.2, written independently of the app's implementation.
pub fn string_to_sign(params: &HashMap<String, String>) -> String {
    let mut keys: Vec<&String> = params
        .keys()
        .filter(|k| {
            ![
                "file",
                "cloud_name",
                "resource_type",
                "api_key",
                "signature",
            ]
            .contains(&k.as_str())
        })
        .filter(|k| !params[*k].is_empty())
        .collect();
    keys.sort();
    keys.iter()
        .map(|k| format!("{k}={}", params[*k].replace('&', "%26")))
        .collect::<Vec<_>>()
        .join("&")
}

fn format_of(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

async fn upload(
    State(fake): State<FakeCloudinary>,
    Path(cloud): Path<String>,
    mut multipart: Multipart,
) -> Response {
    let fault = fake.inner.lock().unwrap().faults.pop_front();
    match fault {
        Some(Fault::ServerError) => return err(StatusCode::INTERNAL_SERVER_ERROR, "General Error"),
        Some(Fault::HtmlUnavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, Html("<html>503</html>")).into_response();
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    if cloud != CLOUD_NAME {
        return err(StatusCode::NOT_FOUND, "Unknown cloud");
    }
    let mut params = HashMap::new();
    let mut file: Option<Vec<u8>> = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.unwrap_or_default();
        if name == "file" {
            file = Some(bytes.to_vec());
        } else {
            params.insert(name, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    if params.get("api_key").map(String::as_str) != Some(API_KEY) {
        return err(StatusCode::UNAUTHORIZED, "Unknown API key");
    }
    let Some(timestamp) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return err(
            StatusCode::BAD_REQUEST,
            "Missing required parameter - timestamp",
        );
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now - timestamp > 3600 || timestamp - now > 3600 {
        return err(
            StatusCode::BAD_REQUEST,
            "Stale request - reported time is more than 1 hour ago",
        );
    }
    let to_sign = string_to_sign(&params);
    let expected = hex::encode(Sha1::digest(format!("{to_sign}{API_SECRET}").as_bytes()));
    let given = params.get("signature").cloned().unwrap_or_default();
    if given != expected {
        return err(
            StatusCode::UNAUTHORIZED,
            &format!("Invalid Signature {given}. String to sign - '{to_sign}'."),
        );
    }
    let Some(file) = file else {
        return err(StatusCode::BAD_REQUEST, "Missing required parameter - file");
    };
    let Some(format) = format_of(&file) else {
        return err(StatusCode::BAD_REQUEST, "Invalid image file");
    };
    let public_id = params
        .get("public_id")
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut inner = fake.inner.lock().unwrap();
    inner.uploads += 1;
    let overwrite = params.get("overwrite").map(String::as_str) != Some("false");
    let existing = inner.assets.get(&public_id).cloned();
    if let (Some(existing), false) = (&existing, overwrite) {
        return Json(
            json!({ "public_id": existing.public_id, "version": existing.version,
                            "secure_url": existing.secure_url, "existing": true }),
        )
        .into_response();
    }
    let version = existing.map(|e| e.version + 1).unwrap_or(now as u64);
    let secure_url = format!(
        "{}/res/{CLOUD_NAME}/image/upload/v{version}/{public_id}.{format}",
        fake.base_url
    );
    inner.assets.insert(
        public_id.clone(),
        Asset {
            public_id: public_id.clone(),
            version,
            format: format.to_owned(),
            bytes: file.clone(),
            signature: given,
            secure_url: secure_url.clone(),
        },
    );
    Json(json!({
        "asset_id": uuid::Uuid::new_v4().simple().to_string(),
        "public_id": public_id, "version": version, "format": format,
        "resource_type": "image", "type": "upload", "bytes": file.len(),
        "width": 1, "height": 1, "secure_url": secure_url,
        "url": secure_url.replace("https://", "http://"), "overwritten": overwrite,
        "created_at": "2026-01-01T00:00:00Z", "tags": [], "placeholder": false,
        "api_key": API_KEY,
    }))
    .into_response()
}

async fn destroy(State(fake): State<FakeCloudinary>, body: String) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let public_id = params.get("public_id").cloned().unwrap_or_default();
    let removed = fake
        .inner
        .lock()
        .unwrap()
        .assets
        .remove(&public_id)
        .is_some();
    Json(json!({ "result": if removed { "ok" } else { "not found" } })).into_response()
}

async fn deliver(
    State(fake): State<FakeCloudinary>,
    Path((_cloud, _version, path)): Path<(String, String, String)>,
) -> Response {
    let id = path
        .rsplit_once('.')
        .map(|(id, _)| id)
        .unwrap_or(&path)
        .to_owned();
    match fake.inner.lock().unwrap().assets.get(&id) {
        Some(a) => (
            [(
                header::CONTENT_TYPE,
                format!(
                    "image/{}",
                    if a.format == "jpg" { "jpeg" } else { &a.format }
                ),
            )],
            a.bytes.clone(),
        )
            .into_response(),
        None => err(StatusCode::NOT_FOUND, "Resource not found"),
    }
}
