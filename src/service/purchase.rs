//! The purchase: hold the seats (the tier's lane, `service::batcher`, decides it with the
//! holds arriving beside it under the tier row's lock), then start the Paystack checkout
//! outside any transaction. DESIGN.md "The purchase, step by step".

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    clients::paystack::{GatewayError, NewTransaction},
    domain::{ids::OrderId, status::OrderStatus},
    error::{AppError, AppResult},
    repo::{self, orders::OrderRow},
    service::{
        batcher::{self, HoldAsk, HoldOutcome},
        budget::{self, Call},
        events, holds, payments, rate_limit,
    },
    state::AppState,
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

/// Whether `s` can be one of our references: 1–64 ASCII letters, digits or '-'.
pub fn is_reference(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
    deadline: Instant,
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
    let mut order = repo::orders::find(&state.db, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency record without its order"))?;
    // The first request with this key is still starting its checkout: wait for its link
    // (the first answer again, same order, same status). If the first request fails instead,
    // it releases the hold and forgets the key, and this one says so: 503, try again. A hold
    // whose link the paced initializer makes is answered as it is (201, the link to follow).
    while order.status == OrderStatus::Pending
        && order.authorization_url.is_none()
        && !repo::orders::checkout_deferred(&state.db, order.id).await?
    {
        if Instant::now() + CHECKOUT_POLL >= deadline {
            outcome("replay_in_progress");
            return Err(AppError::Unavailable(
                "the first request with this Idempotency-Key is still starting its checkout".into(),
            ));
        }
        tokio::time::sleep(CHECKOUT_POLL).await;
        order = repo::orders::find(&state.db, order_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("idempotency record without its order"))?;
    }
    if order.status == OrderStatus::Failed {
        outcome("replay_in_progress");
        return Err(AppError::Unavailable(
            "the first request with this Idempotency-Key could not start its checkout".into(),
        ));
    }
    outcome("replayed");
    Ok(Some(Purchase {
        order,
        replayed: true,
    }))
}

/// How often a retry looks whether the first request's checkout link exists.
const CHECKOUT_POLL: Duration = Duration::from_millis(25);

/// The buyer, as the auth extractor already loaded them.
pub struct Buyer<'a> {
    pub id: Uuid,
    pub email: &'a str,
    /// The client address as per-address limits count it (`http::extract::address_key`).
    pub address: Option<&'a str>,
    /// When the request times out (the purchase answers before it).
    pub deadline: Instant,
}

/// `PURCHASE_RATE_LIMIT_PER_MINUTE` per user and a higher limit per address.
fn limits_of(state: &AppState, buyer: &Buyer<'_>) -> Vec<(String, u32)> {
    let limits = &state.config.limits;
    let mut counted = vec![(
        format!("purchase:user:{}", buyer.id),
        limits.purchases_per_user_per_minute,
    )];
    if let Some(a) = buyer.address {
        counted.push((
            format!("purchase:addr:{a}"),
            limits.purchases_per_address_per_minute,
        ));
    }
    counted
}

/// The rate limits alone, in their own round trip (a tier not resolved yet). If Redis cannot
/// count, the attempt goes on: the hold caps are kept in PostgreSQL and still bound what one
/// account can take.
async fn count_attempt(state: &AppState, buyer: &Buyer<'_>) -> AppResult<()> {
    let limits = limits_of(state, buyer);
    match rate_limit::hit_all(&state.redis, &limits, Duration::from_secs(60)).await {
        Err(AppError::Unavailable(cause)) => {
            tracing::warn!(cause, "purchase rate limit not counted");
            Ok(())
        }
        other => other,
    }
}

// ---- sold-out shedding ----
//
// After a tier sells out, every further attempt would still cost a PostgreSQL round trip
// that waits on the hot tier row. Instead, attempts read the sold-out flag and the release
// epoch (`service::holds`) in one Redis round trip and answer 409 at once while they are
// equal. If Redis is unavailable, nothing is shed.

fn idem_key(state: &AppState, user_id: Uuid, key: &str) -> String {
    state.redis.key(format!(
        "idem:{user_id}:{}",
        crate::security::crypto::token_hash(key)
    ))
}

/// How long a sold-out flag lives at most, bounding the damage of a lost epoch bump.
const SOLDOUT_TTL_SECS: u64 = 5;

/// Tier ids by (event, name or id). Tiers are never renamed or deleted, so a hit is always
/// right; the map is cleared when it grows past a bound.
fn cached_tier(state: &AppState, event_id: Uuid, tier: &str) -> Option<Uuid> {
    state
        .tier_ids
        .lock()
        .ok()
        .and_then(|m| m.get(&(event_id, tier.to_owned())).copied())
}

fn cache_tier(state: &AppState, event_id: Uuid, tier: &str, tier_id: Uuid) {
    if let Ok(mut m) = state.tier_ids.lock() {
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert((event_id, tier.to_owned()), tier_id);
    }
}

async fn resolve_tier(state: &AppState, event_id: Uuid, tier: &str) -> AppResult<Uuid> {
    if let Some(id) = cached_tier(state, event_id, tier) {
        return Ok(id);
    }
    match repo::tiers::find(&state.db, event_id, tier).await? {
        Some(t) => {
            cache_tier(state, event_id, tier, t.id);
            Ok(t.id)
        }
        None => {
            events::load(state, event_id).await?;
            Err(AppError::tier_not_found())
        }
    }
}

/// What one Redis round trip tells the purchase before it touches PostgreSQL.
struct Shedding {
    /// The tier's release epoch as read before trying (written with a sold-out flag).
    epoch: String,
    /// The tier is flagged sold out at this very epoch: answer 409 at once.
    sold_out: bool,
    /// The Idempotency-Key was seen before (or Redis could not say): look for a replay.
    maybe_replay: bool,
}

/// The purchase's one Redis round trip before PostgreSQL: the attempt counted against the
/// rate limits (`count`), and the sold-out flag, the release epoch and the mirrored
/// idempotency key read. Only when there is nothing to count and no key to look up does a
/// tier this instance saw sold out within the last second (`memo::Memo::sold_out`, dropped
/// on every instance as seats are released) answer without the trip; whenever the trip is
/// made anyway, the flag rides along and Redis's epoch decides, so a remembered flag never
/// outlives a release it did not hear of. If Redis cannot answer, the attempt goes on
/// uncounted (the hold caps in PostgreSQL still bound one account), nothing is shed and
/// PostgreSQL tells a replay.
async fn first_trip(
    state: &AppState,
    buyer: &Buyer<'_>,
    count: bool,
    tier_id: Uuid,
    idempotency_key: Option<&str>,
) -> AppResult<Shedding> {
    let memo = &state.hub.memo.sold_out;
    let ticket = memo.ticket();
    let mut pipe = redis::pipe();
    pipe.atomic();
    let limits = if count {
        limits_of(state, buyer)
    } else {
        Vec::new()
    };
    let counted = rate_limit::count_into(&mut pipe, &state.redis, &limits, Duration::from_secs(60));
    if counted.is_empty()
        && idempotency_key.is_none()
        && let Some(epoch) = memo.get(&tier_id)
    {
        return Ok(Shedding {
            sold_out: true,
            epoch,
            maybe_replay: false,
        });
    }
    let mut keys = vec![
        holds::soldout_key(state, tier_id),
        holds::epoch_key(state, tier_id),
    ];
    if let Some(k) = idempotency_key {
        keys.push(idem_key(state, buyer.id, k));
    }
    pipe.cmd("MGET").arg(&keys);
    let mut conn = state.redis.conn();
    let replies: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "purchase rate limit not counted, nothing shed");
            return Ok(Shedding {
                epoch: "0".to_owned(),
                sold_out: false,
                maybe_replay: idempotency_key.is_some(),
            });
        }
    };
    let counts: Vec<u64> = replies
        .iter()
        .take(counted.len())
        .map(|v| redis::from_redis_value_ref(v).unwrap_or(0))
        .collect();
    counted.judge(&counts)?;
    let values: Vec<Option<String>> = replies
        .get(counted.len())
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or_default();
    let get = |i: usize| values.get(i).cloned().flatten();
    let epoch = get(1).unwrap_or_else(|| "0".to_owned());
    let sold_out = get(0).as_deref() == Some(epoch.as_str());
    if sold_out {
        memo.put(ticket, tier_id, epoch.clone());
    }
    Ok(Shedding {
        sold_out,
        maybe_replay: get(2).is_some(),
        epoch,
    })
}

/// Mirrors the key in Redis, so that a replay is recognised even once the tier is shed.
async fn mirror_idempotency_key(state: &AppState, user_id: Uuid, key: &str, order_id: Uuid) {
    let mut conn = state.redis.conn();
    let _: Result<(), _> = redis::cmd("SET")
        .arg(idem_key(state, user_id, key))
        .arg(order_id.to_string())
        .arg("EX")
        .arg(86_400)
        .query_async(&mut conn)
        .await;
}

#[tracing::instrument(skip_all, fields(%event_id, quantity = req.quantity))]
pub async fn purchase(
    state: &AppState,
    buyer: Buyer<'_>,
    event_id: Uuid,
    req: PurchaseRequest,
    idempotency_key: Option<&str>,
) -> AppResult<Purchase> {
    // Everything below, Paystack included, must be answered inside the request timeout.
    let deadline = checkout_deadline(state, buyer.deadline);
    let user_id = buyer.id;
    let hash = request_hash(event_id, &req);
    // `PURCHASE_RATE_LIMIT_PER_MINUTE` per user and a higher limit per address, counted
    // first. A known tier counts them in the same round trip as its shedding reads; an
    // unknown one first, so a stream of bad tiers is limited before it reaches PostgreSQL.
    let (tier_id, shedding) = match cached_tier(state, event_id, &req.tier) {
        Some(tier_id) => {
            let shedding = first_trip(state, &buyer, true, tier_id, idempotency_key)
                .await
                .inspect_err(|_| outcome("rate_limited"))?;
            check_quantity(&req)?;
            (tier_id, shedding)
        }
        None => {
            count_attempt(state, &buyer)
                .await
                .inspect_err(|_| outcome("rate_limited"))?;
            check_quantity(&req)?;
            let tier_id = resolve_tier(state, event_id, &req.tier)
                .await
                .inspect_err(|_| outcome("invalid"))?;
            let shedding = first_trip(state, &buyer, false, tier_id, idempotency_key).await?;
            (tier_id, shedding)
        }
    };
    if let Some(key) = idempotency_key
        && shedding.maybe_replay
        && let Some(p) = replay(state, user_id, key, &hash, deadline).await?
    {
        return Ok(p);
    }
    if shedding.sold_out {
        outcome("sold_out_shed");
        return Err(AppError::sold_out());
    }

    let asker = Asker {
        user_id,
        idempotency_key,
        hash: &hash,
        deadline,
    };
    // Whether this purchase may initialize inline, decided before the hold so that a
    // deferred order is created deferred (one insert, no later update). A slot taken by an
    // attempt that then takes no seat (sold out at the edge, a free order) is simply unused:
    // the budget only paces calls, it never lets more through.
    let slot = budget::try_slot(state, Call::Initialize).await;
    let deferred = slot.is_err();
    let held = take_seats(state, event_id, tier_id, &req, &asker, deferred).await;
    let slot = slot.ok();
    let order = match held {
        Ok(Held::Order(order)) if order.total_amount > 0 => order,
        other => {
            // No call to make (no seats, a replay, a refusal, a free order): the slot goes
            // back at once, so refused attempts never eat the links of real holds.
            if let Some(slot) = slot {
                budget::give_back(state, Call::Initialize, slot).await;
            }
            match other? {
                Held::Order(order) => order,
                Held::Replayed(p) => return Ok(p),
                Held::Nothing => {
                    return Err(not_held(state, event_id, tier_id, &req, &shedding.epoch).await);
                }
            }
        }
    };
    if let Some(k) = idempotency_key {
        mirror_idempotency_key(state, user_id, k, order.id).await;
    }
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
    if deferred {
        outcome("held_link_pending");
        return Ok(Purchase {
            order,
            replayed: false,
        });
    }
    start_checkout(state, buyer.email, order, deadline).await
}

/// When the purchase must stop waiting on Paystack: the request's own deadline (counted from
/// its arrival) less a margin for the answer itself, so that a slow Paystack is answered by
/// us (503, the hold released) and never by the timeout layer (which would drop the purchase
/// half-way).
fn checkout_deadline(state: &AppState, request_deadline: Instant) -> Instant {
    let margin = Duration::from_secs(1).min(state.config.request_timeout / 4);
    request_deadline - margin
}

/// `call` within what is left until `deadline`, or `Unavailable` when that runs out.
async fn within<T>(
    deadline: Instant,
    call: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(answer) => answer,
        Err(_) => Err(GatewayError::Unavailable(
            "no answer within the purchase's time".into(),
        )),
    }
}

enum Held {
    Order(OrderRow),
    /// The same request again (its first answer stands).
    Replayed(Purchase),
    /// No seats taken: sold out, closed, or a quantity over the event's limit.
    Nothing,
}

/// Who asks, and how to recognise the same request again.
#[derive(Clone, Copy)]
struct Asker<'a> {
    user_id: Uuid,
    idempotency_key: Option<&'a str>,
    /// The request's hash, stored with its key.
    hash: &'a str,
    deadline: Instant,
}

/// The hold itself: queued on the tier's lane (`service::batcher`), which decides it with
/// the other holds arriving meanwhile and answers after their shared commit.
async fn take_seats(
    state: &AppState,
    event_id: Uuid,
    tier_id: Uuid,
    req: &PurchaseRequest,
    asker: &Asker<'_>,
    deferred: bool,
) -> AppResult<Held> {
    let Asker {
        user_id,
        idempotency_key,
        hash,
        deadline,
    } = *asker;
    let order_id = Uuid::now_v7();
    let ask = HoldAsk {
        order_id,
        reference: reference_for(order_id),
        user_id,
        quantity: req.quantity,
        idempotency: idempotency_key.map(|k| (k.to_owned(), hash.to_owned())),
        deferred,
        given_back: false,
    };
    // Answered before the request's own deadline; if the lane answers later, the hold (if
    // any) is handed to the paced initializer and a retry with the key finds it.
    let decided = tokio::time::timeout_at(
        deadline.into(),
        batcher::hold(state, event_id, tier_id, ask),
    )
    .await
    .unwrap_or_else(|_| HoldOutcome::Failed("the hold was not decided in time".into()));
    let refused = match decided {
        HoldOutcome::Held(order) => return Ok(Held::Order(*order)),
        HoldOutcome::Failed(cause) => {
            outcome("batch_failed");
            return Err(AppError::UnavailableFor(cause, Duration::from_secs(1)));
        }
        // A replay of a request that succeeded before the tier sold out (its key only in
        // PostgreSQL, e.g. after a Redis restart) still answers its order.
        HoldOutcome::Nothing => None,
        // The same request, stored first: its order is the answer (found by the replay
        // below; should it be gone already, the buyer is told there are no seats for it).
        HoldOutcome::Duplicate => None,
        HoldOutcome::TooManyHolds { retry_after } => {
            outcome("too_many_holds");
            Some(AppError::RateLimited {
                code: "too_many_holds",
                retry_after,
            })
        }
        HoldOutcome::FreeTicketLimit { cap, have } => {
            outcome("free_ticket_limit");
            Some(AppError::conflict(
                "free_ticket_limit",
                format!(
                    "one account may take at most {cap} free tickets for this event; you have {have}"
                ),
            ))
        }
    };
    // The same request again is answered its order, whatever the caps say now.
    if let Some(key) = idempotency_key
        && let Some(p) = replay(state, user_id, key, hash, deadline).await?
    {
        return Ok(Held::Replayed(p));
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(Held::Nothing),
    }
}

/// Paystack's checkout for a held order, outside any transaction, within the purchase's
/// time — inline, the purchase having taken a slot of Paystack's shared initialize budget.
/// Past the budget (the order was then created deferred) or when Paystack answers 429, the
/// seats stay held and the link follows from the paced initializer (`service::checkout`):
/// 201 with `authorization_url: null`. A buyer never loses seats or gets a 503 because
/// Paystack is busy (DESIGN.md).
async fn start_checkout(
    state: &AppState,
    email: &str,
    order: OrderRow,
    deadline: Instant,
) -> AppResult<Purchase> {
    let started = within(
        deadline,
        state.gateway.initialize(NewTransaction {
            email,
            amount: order.total_amount,
            currency: &order.currency,
            reference: &order.reference,
            order_id: order.id,
            event_id: order.event_id,
        }),
    )
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
        Err(GatewayError::Limited { .. }) => defer_checkout(state, order).await,
        Err(e) => {
            outcome("gateway_failed");
            Err(gateway_failed(state, &order, e).await)
        }
    }
}

/// The hold stays; its link is the paced initializer's to make.
async fn defer_checkout(state: &AppState, order: OrderRow) -> AppResult<Purchase> {
    repo::orders::defer_checkout(&state.db, order.id).await?;
    outcome("held_link_pending");
    Ok(Purchase {
        order,
        replayed: false,
    })
}

fn check_quantity(req: &PurchaseRequest) -> AppResult<()> {
    if !(1..=100).contains(&req.quantity) {
        outcome("invalid");
        return Err(quantity_error(100));
    }
    Ok(())
}

fn quantity_error(max: i32) -> AppError {
    AppError::unprocessable(
        "quantity_out_of_range",
        format!("quantity must be 1 to {max}"),
    )
}

/// The slow path after a hold found nothing to take: say why (closed event, quantity over
/// the event's limit, or sold out — which also raises the shedding flag).
async fn not_held(
    state: &AppState,
    event_id: Uuid,
    tier_id: Uuid,
    req: &PurchaseRequest,
    epoch: &str,
) -> AppError {
    let event = match events::load(state, event_id).await {
        Ok(e) => e,
        Err(e) => return e,
    };
    if let Err(e) = events::ensure_open(&event, state.clock.now()) {
        outcome("event_closed");
        return e;
    }
    if req.quantity > event.max_per_order {
        outcome("invalid");
        return quantity_error(event.max_per_order);
    }
    // Shed later attempts only when no seat at all is left: "3 left, asked for 5" must
    // not refuse the next buyer asking for 1.
    let fully_taken = matches!(
        repo::tiers::find(&state.db, event_id, &tier_id.to_string()).await,
        Ok(Some(t)) if t.taken >= t.quantity
    );
    if fully_taken {
        let mut conn = state.redis.conn();
        let _: Result<(), _> = redis::cmd("SET")
            .arg(holds::soldout_key(state, tier_id))
            .arg(epoch)
            .arg("EX")
            .arg(SOLDOUT_TTL_SECS)
            .query_async(&mut conn)
            .await;
    }
    outcome("sold_out");
    AppError::sold_out()
}

/// Paystack refused or did not answer: the buyer has no checkout link, so the hold is
/// released at once (never a hold without a way to pay it) and the key forgotten, so a retry
/// starts afresh. A lost answer is not looked up: even if Paystack did create the
/// transaction, verify would not give back its link, nobody else holds it, and should it be
/// paid anyway the late-payment rules settle or refund it (DESIGN.md step 5).
async fn gateway_failed(state: &AppState, order: &OrderRow, err: GatewayError) -> AppError {
    tracing::warn!(reference = %order.reference, error = %err, "checkout could not start; hold released");
    // On its own task: the request may be cancelled (client gone, timeout) mid-way, and a
    // hold without a link must not survive that.
    let cleanup = {
        let (state, order) = (state.clone(), order.clone());
        tokio::spawn(async move {
            if let Err(e) = holds::end(&state, OrderId(order.id), OrderStatus::Failed).await {
                tracing::error!(error = %e, "could not release a failed hold; the sweeper will");
            }
            // The first answer was a 5xx: a retry with the same key must try again rather
            // than replay a failed order with another status code.
            forget_idempotency(&state, &order).await;
        })
    };
    let _ = cleanup.await;
    match err {
        GatewayError::Rejected { message, .. } => AppError::Upstream {
            provider: "Paystack",
            cause: message,
        },
        GatewayError::Unavailable(cause) => AppError::Unavailable(format!("paystack: {cause}")),
        // The buyer may come back when Paystack's window ends, and is told so.
        GatewayError::Limited { retry_after } => {
            AppError::UnavailableFor("paystack rate limit".into(), retry_after)
        }
    }
}

async fn forget_idempotency(state: &AppState, order: &OrderRow) {
    match repo::orders::delete_idempotency_for(&state.db, order.id).await {
        Ok(Some(key)) => {
            let mut conn = state.redis.conn();
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(idem_key(state, order.user_id, &key))
                .query_async(&mut conn)
                .await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "idempotency record of a failed order kept"),
    }
}

/// For `GET /payments/transactions/:reference`: the buyer's own order only (404 otherwise).
pub async fn order_for_buyer(
    state: &AppState,
    user_id: Uuid,
    reference: &str,
) -> AppResult<OrderRow> {
    // Only what we issue (`ord-<hex>`: letters, digits, '-') can name an order; anything
    // else (a NUL PostgreSQL would refuse, a long string) is simply not found.
    if !is_reference(reference) {
        return Err(AppError::not_found("Transaction"));
    }
    match repo::orders::find_by_reference(&state.db, reference).await? {
        Some(o) if o.user_id == user_id => Ok(o),
        _ => Err(AppError::not_found("Transaction")),
    }
}
