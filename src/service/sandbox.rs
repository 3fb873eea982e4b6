//! The development sandbox checkout (no `PAYSTACK_SECRET_KEY`): reading a sandbox
//! transaction for its page, and paying or declining it — paying sends exactly what Paystack
//! would, a compact `charge.success` signed over its raw bytes, to our own webhook.

use crate::{
    clients::paystack::{SandboxGateway, SandboxTransaction},
    error::{AppError, AppResult},
    security::signing::hmac_sha512_hex,
    state::AppState,
};

/// 404 unless the sandbox is what this instance uses.
pub fn ensure_sandbox(state: &AppState) -> AppResult<()> {
    if state.config.paystack.is_some() || state.config.is_production() {
        return Err(AppError::not_found("This route"));
    }
    Ok(())
}

pub async fn checkout(state: &AppState, reference: &str) -> AppResult<SandboxTransaction> {
    ensure_sandbox(state)?;
    SandboxGateway::load(&state.redis, reference)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))
}

/// Settles the sandbox transaction as `success` (then delivers the signed webhook) or
/// `failed`.
pub async fn settle(state: &AppState, reference: &str, status: &str) -> AppResult<()> {
    ensure_sandbox(state)?;
    let tx = SandboxGateway::settle(&state.redis, reference, status)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    if status != "success" {
        return Ok(());
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "event": "charge.success",
        "data": { "id": rand::random::<u32>(), "status": "success", "reference": reference,
                  "amount": tx.amount, "currency": tx.currency, "fees": null },
    }))
    .unwrap_or_default();
    let signature = hmac_sha512_hex(state.config.webhook_secret().as_bytes(), &body);
    let url = format!("{}/payments/callback", state.config.public_base_url);
    if let Err(e) = state
        .http_client
        .post(url)
        .header("content-type", "application/json")
        .header("x-paystack-signature", signature)
        .body(body)
        .send()
        .await
    {
        tracing::warn!(error = %e, "sandbox webhook not delivered; the sweeper will verify");
    }
    Ok(())
}
