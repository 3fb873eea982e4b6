//! The development sandbox checkout (no `PAYSTACK_SECRET_KEY`): reading a sandbox
//! transaction for its page, and paying or declining it — paying sends exactly what Paystack
//! would, a compact `charge.success` signed over its raw bytes, to our own webhook.

use crate::{
    clients::paystack::{SandboxGateway, TxStatus},
    domain::{ids::OrderId, status::OrderStatus},
    error::{AppError, AppResult},
    repo,
    security::signing::hmac_sha512_hex,
    service::holds,
    state::AppState,
};

/// 404 unless the sandbox is what this instance uses.
pub fn ensure_sandbox(state: &AppState) -> AppResult<()> {
    if state.config.paystack.is_some() || state.config.is_production() {
        return Err(AppError::not_found("This route"));
    }
    Ok(())
}

/// What the checkout page shows.
pub struct Checkout {
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub event_title: String,
    pub tier_name: String,
    /// The order's status (`pending` until a button is pressed), not Paystack's word for an
    /// unpaid transaction (`abandoned`).
    pub order_status: OrderStatus,
}

pub async fn checkout(state: &AppState, reference: &str) -> AppResult<Checkout> {
    ensure_sandbox(state)?;
    let tx = SandboxGateway::load(&state.redis, reference)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    let order = repo::orders::find_by_reference(&state.db, reference)
        .await?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    let event = crate::service::events::load(state, order.event_id).await?;
    let tier = repo::tiers::find(&state.db, order.event_id, &order.tier_id.to_string())
        .await?
        .map(|t| t.name)
        .unwrap_or_default();
    Ok(Checkout {
        amount: tx.amount,
        currency: tx.currency,
        email: tx.email,
        event_title: event.title,
        tier_name: tier,
        order_status: order.status,
    })
}

/// Settles the sandbox transaction as `success` (then delivers the signed webhook) or
/// `failed`.
pub async fn settle(state: &AppState, reference: &str, status: &str) -> AppResult<()> {
    ensure_sandbox(state)?;
    // A checkout is settled once: Pay after Decline (or the reverse) changes nothing.
    let current = SandboxGateway::load(&state.redis, reference)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    if current.status == "success" || current.status == "failed" {
        return Err(AppError::conflict(
            "checkout_settled",
            format!("This checkout was already settled ({}).", current.status),
        ));
    }
    let tx = SandboxGateway::settle(&state.redis, reference, status)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?
        .ok_or_else(|| AppError::not_found("Checkout"))?;
    if status != "success" {
        // Declined: settled through verify, as the sweeper would settle it, but now: the
        // order fails and its seats go back at once.
        let verified = state
            .gateway
            .verify(reference)
            .await
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
        if verified.status == TxStatus::Failed
            && let Some(order) = repo::orders::find_by_reference(&state.db, reference).await?
        {
            holds::end_and_tell(state, OrderId(order.id), OrderStatus::Failed).await?;
        }
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
