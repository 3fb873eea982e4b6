//! Fake Cloudinary (§3): the upload API under `/v1_1/{cloud}/image/...` with the
//! `{"error": {"message"}}` body. Upload and destroy arrive with the poster feature.

use axum::{Json, Router, http::StatusCode, response::IntoResponse};
use serde_json::json;

use super::serve;

pub const CLOUD_NAME: &str = "fake-cloud";
pub const API_KEY: &str = "614335564976464";
pub const API_SECRET: &str = "cld_test_secret";

#[derive(Clone, Default)]
pub struct FakeCloudinary {
    pub base_url: String,
}

impl FakeCloudinary {
    pub async fn spawn() -> Self {
        let router = Router::new().fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": { "message": "Resource not found" } })),
            )
                .into_response()
        });
        FakeCloudinary {
            base_url: serve(router).await,
        }
    }
}
