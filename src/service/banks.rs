//! The Paystack bank list, cached in Redis for every instance. A cached copy older than
//! `REFRESH_AFTER` is served at once and refreshed in the background; with no copy at all the
//! list is fetched in the request. A Paystack outage therefore only matters on a cold cache.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

pub use crate::clients::paystack::Bank;

use crate::{
    clients::paystack::GatewayError,
    error::{AppError, AppResult},
    state::AppState,
};

#[derive(Serialize, Deserialize)]
struct Cached {
    fetched_at: i64,
    banks: Vec<Bank>,
}

fn key(state: &AppState) -> String {
    state.redis.key("cache:banks")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub async fn list(state: &AppState) -> AppResult<Vec<Bank>> {
    let mut conn = state.redis.conn();
    let cached: Option<String> = conn.get(key(state)).await.unwrap_or(None);
    if let Some(cached) = cached.and_then(|c| serde_json::from_str::<Cached>(&c).ok()) {
        if now() - cached.fetched_at >= state.config.banks_refresh_after.as_secs() as i64 {
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = refresh(&state).await {
                    tracing::warn!(error = %e, "bank list refresh failed; serving the cached list");
                }
            });
        }
        return Ok(cached.banks);
    }
    refresh(state).await.map_err(|e| match e {
        GatewayError::Unavailable(cause) | GatewayError::Rejected { message: cause, .. } => {
            AppError::Upstream {
                provider: "Paystack",
                cause,
            }
        }
        GatewayError::Limited { retry_after } => {
            AppError::UnavailableFor("paystack rate limit".into(), retry_after)
        }
    })
}

async fn refresh(state: &AppState) -> Result<Vec<Bank>, GatewayError> {
    let banks = state.gateway.list_banks().await?;
    let cached = Cached {
        fetched_at: now(),
        banks: banks.clone(),
    };
    let mut conn = state.redis.conn();
    // Kept a week: long enough to ride out any outage, short enough to notice a dead key.
    let week = Duration::from_secs(7 * 24 * 3600).as_secs();
    if let Ok(json) = serde_json::to_string(&cached) {
        let _: Result<(), _> = conn.set_ex(key(state), json, week).await;
    }
    Ok(banks)
}

/// The bank with this code, from the cached list.
pub async fn find(state: &AppState, code: &str) -> AppResult<Option<Bank>> {
    Ok(list(state).await?.into_iter().find(|b| b.code == code))
}
