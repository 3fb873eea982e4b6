//! Poster storage: Cloudinary (signed upload through our own reqwest client) or, without
//! Cloudinary credentials, a local folder served by the app under `/uploads`.
//!
//! Why not the `cloudinary` crate: it hard-codes api.cloudinary.com (no base URL for the
//! test fake), signs with a millisecond timestamp where the API wants seconds, builds a new
//! HTTP client per call and reads files from paths. Contract: external-apis.md §3.

use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::config::CloudinaryConfig;

pub use crate::domain::image::{Image, ImageKind, MAX_POSTER_BYTES};

#[derive(Debug, Clone)]
pub struct StoredImage {
    pub url: String,
    pub public_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media storage unavailable: {0}")]
    Unavailable(String),
    #[error("media storage refused the upload: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Stores (or replaces) the poster of one event. The id is per event, so a replacement
    /// never touches another event's poster.
    async fn put_poster(&self, event_id: Uuid, image: &Image) -> Result<StoredImage, MediaError>;
    /// Best-effort removal (a poster orphaned by a failed create).
    async fn delete(&self, public_id: &str);
}

/// Cloudinary's signature: the signed parameters as `k=v` sorted by name, joined with `&`,
/// the API secret appended, SHA-1 in lowercase hex. Empty values are left out; `&` inside a
/// value is written `%26`.
pub fn cloudinary_signature(params: &[(&str, &str)], secret: &str) -> String {
    let mut pairs: Vec<(&str, String)> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.replace('&', "%26")))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let to_sign = format!("{}{secret}", joined.join("&"));
    hex::encode(Sha1::digest(to_sign.as_bytes()))
}

pub struct CloudinaryStore {
    http: reqwest::Client,
    config: CloudinaryConfig,
}

impl CloudinaryStore {
    pub fn new(http: reqwest::Client, config: CloudinaryConfig) -> Self {
        Self { http, config }
    }

    fn endpoint(&self, action: &str) -> String {
        format!(
            "{}/v1_1/{}/image/{action}",
            self.config.base_url, self.config.cloud_name
        )
    }
}

#[derive(Deserialize)]
struct UploadAnswer {
    secure_url: String,
    public_id: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorMessage,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

#[async_trait]
impl MediaStore for CloudinaryStore {
    async fn put_poster(&self, event_id: Uuid, image: &Image) -> Result<StoredImage, MediaError> {
        let public_id = format!("events/{event_id}/poster");
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signed = [
            ("invalidate", "true"),
            ("overwrite", "true"),
            ("public_id", public_id.as_str()),
            ("timestamp", timestamp.as_str()),
        ];
        let signature = cloudinary_signature(&signed, self.config.api_secret.expose_secret());
        let file = reqwest::multipart::Part::bytes(image.bytes.to_vec())
            .file_name(format!("poster.{}", image.kind.extension()))
            .mime_str(image.kind.mime())
            .map_err(|e| MediaError::Rejected(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("api_key", self.config.api_key.clone())
            .text("timestamp", timestamp.clone())
            .text("public_id", public_id.clone())
            .text("overwrite", "true")
            .text("invalidate", "true")
            .text("signature", signature);
        let res = self
            .http
            .post(self.endpoint("upload"))
            .multipart(form)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        if status.is_success() {
            let answer: UploadAnswer = serde_json::from_slice(&body)
                .map_err(|e| MediaError::Unavailable(format!("unreadable answer: {e}")))?;
            return Ok(StoredImage {
                url: answer.secure_url,
                public_id: answer.public_id,
            });
        }
        let message = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| format!("HTTP {status}"));
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 420 {
            Err(MediaError::Unavailable(message))
        } else {
            // 401 (signature, key) and 400 are configuration problems on our side.
            tracing::error!(status = status.as_u16(), %message, "cloudinary refused an upload");
            Err(MediaError::Rejected(message))
        }
    }

    async fn delete(&self, public_id: &str) {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signed = [
            ("invalidate", "true"),
            ("public_id", public_id),
            ("timestamp", timestamp.as_str()),
        ];
        let signature = cloudinary_signature(&signed, self.config.api_secret.expose_secret());
        let form = [
            ("public_id", public_id.to_owned()),
            ("invalidate", "true".to_owned()),
            ("timestamp", timestamp.clone()),
            ("api_key", self.config.api_key.clone()),
            ("signature", signature),
        ];
        if let Err(e) = self
            .http
            .post(self.endpoint("destroy"))
            .form(&form)
            .send()
            .await
        {
            tracing::warn!(error = %e, public_id, "could not delete an orphaned poster");
        }
    }
}

/// Development stand-in: files under `UPLOAD_DIR`, served by the app at `/uploads/...`.
pub struct LocalStore {
    dir: PathBuf,
    public_base_url: String,
}

impl LocalStore {
    pub fn new(dir: PathBuf, public_base_url: String) -> Self {
        Self {
            dir,
            public_base_url,
        }
    }
}

#[async_trait]
impl MediaStore for LocalStore {
    async fn put_poster(&self, event_id: Uuid, image: &Image) -> Result<StoredImage, MediaError> {
        // A fresh name per upload, so browsers and caches never show a stale poster.
        let relative = format!(
            "events/{event_id}/poster-{}.{}",
            Uuid::now_v7().simple(),
            image.kind.extension()
        );
        let path = self.dir.join(&relative);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        }
        tokio::fs::write(&path, &image.bytes)
            .await
            .map_err(|e| MediaError::Unavailable(e.to_string()))?;
        Ok(StoredImage {
            url: format!("{}/uploads/{relative}", self.public_base_url),
            public_id: relative,
        })
    }

    async fn delete(&self, public_id: &str) {
        if !public_id.contains("..") {
            let _ = tokio::fs::remove_file(self.dir.join(public_id)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_vector() {
        let sig = cloudinary_signature(
            &[
                ("public_id", "events/7c1e/poster"),
                ("overwrite", "true"),
                ("invalidate", "true"),
                ("timestamp", "1767225600"),
            ],
            "cld_test_secret",
        );
        assert_eq!(sig, "2e963cb102ad5e8058cce9c2b9f076c9087b8372");
    }

    #[test]
    fn images_are_recognised_by_content() {
        assert_eq!(
            ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageKind::Png)
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a"), None);
        assert_eq!(ImageKind::sniff(b"<svg"), None);
    }
}
