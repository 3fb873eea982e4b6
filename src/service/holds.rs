//! The end of a hold, in one place: an order stops holding seats exactly once (a guarded
//! transition), its seats and discount allowance go back to the tier in the same
//! transaction, the tier's release epoch moves before the commit (so sold-out shedding never
//! refuses a free seat), and the new status is published to every instance.
//!
//! Used by the purchase (a checkout that could not start), settlement (a payment that cannot
//! be honoured), cancellation (voided holds) and the sweeper (expired holds).

use uuid::Uuid;

use crate::{
    domain::{ids::OrderId, status::OrderStatus},
    error::AppResult,
    memo::Change,
    repo::{self, orders::OrderRow},
    state::AppState,
};

// ---- sold-out shedding keys ----
//
// After a tier sells out, the first attempt that finds it so writes `soldout:<tier> = E`,
// where E is the tier's release epoch it read *before* trying; later attempts answer 409 at
// once while the two are equal (see `service::purchase`). Anything that gives seats back
// increments the epoch *before* its transaction commits.

pub fn soldout_key(state: &AppState, tier_id: Uuid) -> String {
    state.redis.key(format!("soldout:{tier_id}"))
}

pub fn epoch_key(state: &AppState, tier_id: Uuid) -> String {
    state.redis.key(format!("epoch:{tier_id}"))
}

/// Called by whatever gives seats back, after its update of the tier row and before its
/// commit (the row locked in between, so no purchase can see the tier full at the new
/// epoch). Every instance forgets its memo of the tier's sold-out flag too (`memo`), which
/// the epoch alone would not reach.
pub async fn seats_released(state: &AppState, tier_id: Uuid) {
    let mut conn = state.redis.conn();
    let r: Result<i64, _> = redis::cmd("INCR")
        .arg(epoch_key(state, tier_id))
        .query_async(&mut conn)
        .await;
    if let Err(e) = r {
        // Shedding then stays on a stale flag until it expires: bounded by its TTL.
        tracing::warn!(error = %e, %tier_id, "release epoch not bumped");
    }
    // After the epoch moved: a purchase that misses the dropped entry reads the new epoch.
    crate::hub::announce(&state.hub, &state.redis, Change::Tier(tier_id)).await;
}

/// pending → `to` inside the caller's transaction, giving the seats back. `None` when the
/// order was no longer pending (paid or released by someone else).
pub async fn end_in(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    order_id: Uuid,
    to: OrderStatus,
) -> AppResult<Option<OrderRow>> {
    let Some(order) = repo::orders::end_hold(&mut *tx, order_id, to).await? else {
        return Ok(None);
    };
    // Seats first, then the epoch: from the update on, the tier row stays locked until the
    // commit, so a purchase that reads the new epoch reaches the row only after the seats are
    // back. (Epoch first left a gap in which such a purchase could still find the tier full
    // and flag it sold out at the new epoch, refusing the freed seats until the flag expired.)
    repo::tiers::release_seats(&mut *tx, order.tier_id, order.quantity, order.discounted).await?;
    seats_released(state, order.tier_id).await;
    Ok(Some(order))
}

/// pending → `to` (expired, failed, cancelled) in its own transaction, then published.
/// False when the order was no longer pending.
pub async fn end(state: &AppState, order_id: OrderId, to: OrderStatus) -> AppResult<bool> {
    end_telling(state, order_id, to, false).await
}

/// Like `end`, and the buyer is mailed that the purchase did not go through (a hold that
/// expired, a payment declined), in the same transaction. Not for a checkout that could
/// not start: that buyer was answered at once.
pub async fn end_and_tell(state: &AppState, order_id: OrderId, to: OrderStatus) -> AppResult<bool> {
    end_telling(state, order_id, to, true).await
}

async fn end_telling(
    state: &AppState,
    order_id: OrderId,
    to: OrderStatus,
    tell: bool,
) -> AppResult<bool> {
    // The mail is prepared before the hold ends: ending it locks the hot tier row until the
    // commit, which must not wait on these lookups.
    let mail = if tell {
        failure_mail(state, order_id, to).await?
    } else {
        None
    };
    let mut tx = state.db.begin().await?;
    let Some(order) = end_in(state, &mut tx, order_id.into(), to).await? else {
        return Ok(false);
    };
    let told = match &mail {
        Some(mail) => crate::service::mail::enqueue_in(&mut *tx, mail).await?,
        None => false,
    };
    tx.commit().await?;
    if told {
        state.mail_wake.notify_one();
    }
    if to == OrderStatus::Expired {
        metrics::counter!("ticketing_holds_expired_total").increment(1);
    }
    publish_status(state, &order.reference, to).await;
    Ok(true)
}

/// The "your purchase did not go through" mail of a pending order, if it has a buyer.
async fn failure_mail(
    state: &AppState,
    order_id: OrderId,
    to: OrderStatus,
) -> AppResult<Option<crate::clients::mail::Email>> {
    let Some(order) = repo::orders::find(&state.db, order_id.into()).await? else {
        return Ok(None);
    };
    let Some(user) = repo::users::find_by_id(&state.db, order.user_id).await? else {
        return Ok(None);
    };
    let title = repo::events::title_of(&state.db, order.event_id)
        .await?
        .unwrap_or_default();
    Ok(Some(crate::service::notifications::purchase_failed(
        order.id,
        &user.email,
        &user.first_name,
        &title,
        to == OrderStatus::Expired,
    )))
}

/// pending → expired for a hold Paystack could not be asked about for `HOLD_TTL_SECONDS`
/// past its expiry: its seats go back now, and the order is marked `reverify` in the same
/// transaction, so the sweeper keeps asking until Paystack answers and a payment that did
/// happen is still settled (or refunded: the late-payment rules). False when it was no
/// longer pending.
pub async fn expire_unverified(state: &AppState, order_id: OrderId) -> AppResult<bool> {
    let mail = failure_mail(state, order_id, OrderStatus::Expired).await?;
    let mut tx = state.db.begin().await?;
    let Some(order) = end_in(state, &mut tx, order_id.into(), OrderStatus::Expired).await? else {
        return Ok(false);
    };
    repo::orders::set_reverify(&mut *tx, order.id, true).await?;
    if let Some(mail) = &mail {
        crate::service::mail::enqueue_in(&mut *tx, mail).await?;
    }
    tx.commit().await?;
    state.mail_wake.notify_one();
    metrics::counter!("ticketing_holds_expired_total").increment(1);
    metrics::counter!("ticketing_holds_expired_unverified_total").increment(1);
    publish_status(state, &order.reference, OrderStatus::Expired).await;
    Ok(true)
}

/// Tells every instance's websocket subscribers about a status change.
pub async fn publish_status(state: &AppState, reference: &str, status: OrderStatus) {
    let message = serde_json::json!({ "reference": reference, "status": status }).to_string();
    crate::hub::publish(&state.redis, message).await;
}
