//! The purchase: hold the seats (one guarded statement, see `repo::orders::hold`), then start
//! the Paystack checkout outside any transaction. DESIGN.md "The purchase, step by step".

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    app::AppState,
    clients::paystack::{GatewayError, NewTransaction, TxStatus},
    error::{AppError, AppResult},
    repo::{
        self,
        orders::{HoldRequest, OrderRow},
    },
    service::{events, payments},
};

fn outcome(o: &'static str) {
    metrics::counter!("ticketing_purchases_total", "outcome" => o).increment(1);
}

pub struct PurchaseRequest {
    pub tier: String,
    pub quantity: i32,
}

pub struct Purchase {
    pub order: OrderRow,
    /// An idempotent replay of an earlier request.
    pub replayed: bool,
}

/// `ord-<uuid simple>`: letters, digits and '-', unique per order (the order id is v7).
pub fn reference_for(order_id: Uuid) -> String {
    format!("ord-{}", order_id.simple())
}

fn request_hash(event_id: Uuid, req: &PurchaseRequest) -> String {
    hex::encode(Sha256::digest(
        format!("{event_id}\n{}\n{}", req.tier, req.quantity).as_bytes(),
    ))
}

async fn replay(
    state: &AppState,
    user_id: Uuid,
    key: &str,
    hash: &str,
) -> AppResult<Option<Purchase>> {
    let Some((stored_hash, order_id)) =
        repo::orders::idempotency_record(&state.db, user_id, key).await?
    else {
        return Ok(None);
    };
    if stored_hash != hash {
        return Err(AppError::validation(
            "Idempotency-Key",
            "was already used with a different request body",
        ));
    }
    let order = repo::orders::find(&state.db, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency record without its order"))?;
    outcome("replayed");
    Ok(Some(Purchase {
        order,
        replayed: true,
    }))
}

#[tracing::instrument(skip_all, fields(%event_id, quantity = req.quantity))]
pub async fn purchase(
    state: &AppState,
    user_id: Uuid,
    event_id: Uuid,
    req: PurchaseRequest,
    idempotency_key: Option<&str>,
) -> AppResult<Purchase> {
    let hash = request_hash(event_id, &req);
    if let Some(key) = idempotency_key
        && let Some(p) = replay(state, user_id, key, &hash).await?
    {
        return Ok(p);
    }

    let event = events::load(state, event_id).await?;
    events::ensure_open(&event).inspect_err(|_| outcome("event_closed"))?;
    if !(1..=event.max_per_order).contains(&req.quantity) {
        outcome("invalid");
        return Err(AppError::unprocessable(
            "quantity_out_of_range",
            format!("quantity must be 1 to {}", event.max_per_order),
        ));
    }
    let tier = repo::tiers::find(&state.db, event_id, &req.tier)
        .await?
        .ok_or_else(|| {
            outcome("invalid");
            AppError::NotFound {
                code: "tier_not_found",
                detail: "No tier of this event has that name or id.".into(),
            }
        })?;

    let order_id = Uuid::now_v7();
    let reference = reference_for(order_id);
    let held = repo::orders::hold(
        &state.db,
        HoldRequest {
            order_id,
            reference: &reference,
            user_id,
            event_id,
            tier_id: tier.id,
            quantity: req.quantity,
            hold_seconds: state.config.hold_ttl.as_secs_f64(),
            idempotency: idempotency_key.map(|k| (k, hash.as_str())),
        },
    )
    .await;
    let order = match held {
        Ok(Some(order)) => order,
        Ok(None) => {
            outcome("sold_out");
            return Err(AppError::conflict(
                "sold_out",
                "Not enough tickets are left in this tier.",
            ));
        }
        // Two identical requests raced: the other one's order is the answer.
        Err(e) if repo::is_unique_violation(&e, "idempotency_keys_pkey") => {
            let key = idempotency_key.unwrap_or_default();
            return replay(state, user_id, key, &hash)
                .await?
                .ok_or_else(|| anyhow::anyhow!("idempotency conflict without a record").into());
        }
        Err(e) => return Err(e.into()),
    };

    if order.total_amount == 0 {
        // A free tier skips payment: issued at once.
        payments::complete_free_order(state, &order).await?;
        outcome("free");
        return Ok(Purchase {
            order: repo::orders::find(&state.db, order.id)
                .await?
                .unwrap_or(order),
            replayed: false,
        });
    }

    let user = repo::users::find_by_id(&state.db, user_id)
        .await?
        .ok_or_else(|| AppError::unauthorized("unauthorized", "The account no longer exists."))?;
    let started = state
        .gateway
        .initialize(NewTransaction {
            email: &user.email,
            amount: order.total_amount,
            currency: &order.currency,
            reference: &order.reference,
            order_id: order.id,
            event_id,
        })
        .await;
    match started {
        Ok(checkout) => {
            repo::orders::set_checkout(
                &state.db,
                order.id,
                &checkout.authorization_url,
                &checkout.access_code,
            )
            .await?;
            outcome("held");
            let mut order = order;
            order.authorization_url = Some(checkout.authorization_url);
            Ok(Purchase {
                order,
                replayed: false,
            })
        }
        Err(e) => {
            outcome("gateway_failed");
            Err(gateway_failed(state, &order, e).await)
        }
    }
}

/// Paystack refused or did not answer. A refusal means no transaction exists: release the
/// hold. A lost answer is an unknown outcome: ask verify before releasing; if verify cannot
/// answer either, the hold stays and the sweeper settles it at expiry (it asks Paystack too).
async fn gateway_failed(state: &AppState, order: &OrderRow, err: GatewayError) -> AppError {
    tracing::warn!(reference = %order.reference, error = %err, "checkout could not start");
    let release = match &err {
        GatewayError::Rejected { .. } => true,
        GatewayError::Unavailable(_) => match state.gateway.verify(&order.reference).await {
            Ok(v) => v.status == TxStatus::NotFound || v.status == TxStatus::Failed,
            Err(_) => false,
        },
    };
    if release && let Err(e) = payments::end_hold(state, order.id, "failed").await {
        tracing::error!(error = %e, "could not release a failed hold; the sweeper will");
    }
    match err {
        GatewayError::Rejected { message, .. } => AppError::Upstream {
            provider: "Paystack",
            cause: message,
        },
        GatewayError::Unavailable(cause) => AppError::Unavailable(format!("paystack: {cause}")),
    }
}

/// For `GET /payments/transactions/:reference`: the buyer's own order only (404 otherwise).
pub async fn order_for_buyer(
    state: &AppState,
    user_id: Uuid,
    reference: &str,
) -> AppResult<OrderRow> {
    match repo::orders::find_by_reference(&state.db, reference).await? {
        Some(o) if o.user_id == user_id => Ok(o),
        _ => Err(AppError::not_found("Transaction")),
    }
}
