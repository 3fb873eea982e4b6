//! Holds past the flush wall: many holds share one durable commit.
//!
//! A hold used to be one statement and one commit, and every commit kept the tier row locked
//! through the disk flush (~0.7 ms here), so a tier took at most ~1,300 holds a second
//! however many cores served it (`docs/inventory.md`). Here each instance keeps one *lane*
//! per tier: a task that takes every hold waiting for that tier, decides them together under
//! the tier row's lock and commits them in one transaction (group commit). An idle tier adds
//! no waiting at all (a batch of one leaves at once) and a busy one pays one flush for up to
//! `MAX_BATCH` holds.
//!
//! A batch gathers until it has the row: it locks the tier row first and only then takes
//! every hold that queued on its lane while it waited (`lanes::Gather`). So the time another
//! batch holds the row — this instance's previous one, or another instance's — is time this
//! instance's buyers spend joining the next batch, not forming batches of their own that then
//! queue at the row one by one. With two instances each lane sees half the buyers; gathering
//! at the row keeps their batches from halving (23 attempts per commit on two instances,
//! against 9.4 when batches formed before the row and 32 on one instance; measured:
//! `docs/inventory.md`, "Why gather at the row", and README, Performance).
//!
//! What stays true:
//! - PostgreSQL is the only truth. The tier row is locked (`FOR UPDATE`) before the seats are
//!   counted and until the commit, on every instance, so two instances' lanes serialise on it
//!   and never oversell; the guarded update and the table's CHECK stay behind it.
//! - Each buyer is answered only after the commit that made their hold durable.
//! - Orders are decided in arrival order, each all or nothing (first fit: a buyer asking for 5
//!   when 3 are left is refused, the next asking for 1 still gets one), the discount per
//!   order as before. One exception: a hold given back (below) is decided first in the next
//!   batch, after holds that arrived later but went in the batch that gave it back.
//! - The per-buyer caps are counted under advisory locks, one per buyer and event, so one
//!   buyer's racing requests still serialise (across tiers and instances too) and nobody else
//!   waits. Under the tier row a batch only *tries* its buyers' locks
//!   (`pg_try_advisory_xact_lock`); a hold whose buyer's lock another transaction holds (the
//!   same buyer in a batch of another tier, or of this tier on another instance) is given back
//!   to the front of the queue, marked, and its next batch waits for that lock *before* the
//!   row, so a hold is given back at most once. No one holding a tier row ever waits for a
//!   buyer's lock: no cycle, and one tier's row never waits for another tier's commit (this
//!   instance's lane for the tier does, while a given-back hold leads it). Holds are counted
//!   after every lock is held, in a statement of its own (one statement's snapshot would
//!   predate its wait).
//! - A repeated Idempotency-Key never takes seats twice: inside a batch the first copy decides
//!   (granted, the others are answered its order; refused, they are refused alike), and a key
//!   already stored elsewhere is skipped by the insert and its order taken back before the
//!   commit; the caller then answers the stored order. (Decisions later in that batch are not
//!   redone: at the very edge of a sellout such a rare race can refuse a seat the taken-back
//!   order freed. Never the other way: counters stay exact.)
//! - A batch whose transaction fails takes no seat (it rolls back) and answers each of its own
//!   buyers 503 with `Retry-After`; other batches are untouched.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{
    lanes::{Gather, Lanes},
    repo::{
        self,
        orders::{BuyerUsage, GrantedHold, OrderRow, TierForHolds},
    },
    state::AppState,
};

/// Most holds one transaction decides. Bounds the statement's size and a batch's latency.
pub const MAX_BATCH: usize = 256;

pub use crate::repo::orders::{HoldAsk, HoldOutcome};
pub use crate::state::HoldQueued as Queued;

/// (event, tier): a tier belongs to one event, the event is needed to check it is open.
pub type LaneKey = (Uuid, Uuid);

/// This instance's hold lanes, one per tier with holds waiting or being committed.
pub type Batcher = Lanes<LaneKey, Queued>;

/// Queues `ask` on its tier's lane (starting the lane if there is none) and waits for the
/// commit that decides it. The batch runs on the lane's own task: a buyer who goes away
/// does not cancel anyone else's hold.
pub async fn hold(state: &AppState, event_id: Uuid, tier_id: Uuid, ask: HoldAsk) -> HoldOutcome {
    let lane_state = state.clone();
    state
        .batcher
        .ask(
            (event_id, tier_id),
            ask,
            (MAX_BATCH, IN_FLIGHT),
            move |key, batch, gather| {
                let state = lane_state.clone();
                async move { run_batch(&state, key, batch, gather).await }
            },
        )
        .await
        .unwrap_or_else(|| HoldOutcome::Failed("the hold's batch ended without an answer".into()))
}

/// Batches of one lane in flight at once. One: a batch gathers at the row everything that
/// queued while it began and waited, so a second batch in flight on the same instance would
/// only split that queue in two and queue at the row itself. The row is idle between one
/// batch's commit and the next one's lock (a round trip or two) on one instance; with two,
/// the other instance's batch is waiting and takes it. Measured on the bench's flash sale
/// (holds-only runs, 2026-12-03, with the buyers' locks then waited for after the row): one in
/// flight 6,539–6,572 holds/s on one instance and 5,206–5,680 on two; two in flight
/// 5,575–5,881 and 4,107–4,425; three 5,528–5,604 and 3,642–3,857. As built (locks tried):
/// 5,773–5,938 and 4,554–5,475 (`docs/inventory.md`).
const IN_FLIGHT: usize = 1;

// "Given back at most once" needs it: with a second batch in flight, a running batch could
// gather a hold another just gave back and, only trying its lock, give it back again.
const _: () = assert!(IN_FLIGHT == 1, "a given-back hold must lead the next batch");

/// The holds of `batch` whose buyers still wait (one who went away while queued — timeout,
/// disconnect — takes nothing), as asks and the answers they wait on.
fn still_waiting(batch: Vec<Queued>) -> (Vec<HoldAsk>, Vec<oneshot::Sender<HoldOutcome>>) {
    batch
        .into_iter()
        .filter(|(_, answer)| !answer.is_closed())
        .unzip()
}

/// Decides and commits one batch (with what it gathers at the row), then answers each of its
/// buyers.
async fn run_batch(
    state: &AppState,
    (event_id, tier_id): LaneKey,
    batch: Vec<Queued>,
    gather: Gather<Queued>,
) {
    let (mut asks, mut answers) = still_waiting(batch);
    if asks.is_empty() {
        return;
    }
    let decided = decide_and_commit(
        state,
        (event_id, tier_id),
        (&mut asks, &mut answers),
        &gather,
    )
    .await;
    metrics::histogram!("ticketing_hold_batch_size").record(asks.len() as f64);
    let outcomes = match decided {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, %tier_id, holds = asks.len(), "hold batch failed; nothing taken");
            metrics::counter!("ticketing_hold_batches_failed_total").increment(1);
            asks.iter()
                .map(|_| HoldOutcome::Failed("the hold could not be stored".into()))
                .collect()
        }
    };
    let mut unanswered = Vec::new();
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        if let Err(HoldOutcome::Held(order)) = answer.send(outcome) {
            unanswered.push(order.id);
        }
    }
    if !unanswered.is_empty() {
        // Buyers who went away during the commit: their holds stand, and their links are the
        // paced initializer's to make (a retry with the same key is answered the order, link
        // to follow), never a hold nobody can pay. One statement, off the lane: the next
        // batch does not wait for it.
        let db = state.db.clone();
        tokio::spawn(async move {
            if let Err(e) = repo::orders::defer_checkouts(&db, &unanswered).await {
                tracing::warn!(error = %e, holds = unanswered.len(), "unanswered holds have no link; they expire");
            }
        });
    }
}

/// The distinct buyers of `asks`, leaving out `known`.
fn buyers_of<'a>(asks: impl IntoIterator<Item = &'a HoldAsk>, known: &HashSet<Uuid>) -> Vec<Uuid> {
    asks.into_iter()
        .map(|a| a.user_id)
        .filter(|u| !known.contains(u))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// The batch's transaction: the locks of given-back holds' buyers (waited for), the tier
/// row's lock and counts, what queued meanwhile (appended to `asks` and `answers`), every
/// other buyer's lock tried (holds of busy ones given back, taken out of `asks` and
/// `answers`), one count of the buyers' holds, the decision in arrival order, one insert, one
/// commit. Outcomes are in `asks`' order.
async fn decide_and_commit(
    state: &AppState,
    (event_id, tier_id): LaneKey,
    (asks, answers): (&mut Vec<HoldAsk>, &mut Vec<oneshot::Sender<HoldOutcome>>),
    gather: &Gather<Queued>,
) -> anyhow::Result<Vec<HoldOutcome>> {
    let limits = &state.config.limits;
    let capped = limits.max_active_holds_per_user > 0 || limits.max_free_tickets_per_user > 0;
    let mut tx = state.db.begin().await?;
    // Holds given back once by an earlier batch wait for their buyers' locks now, before the
    // row (rare: one buyer in two batches at once, of two tiers or two instances), so no hold
    // is given back twice.
    let mut locked = HashSet::new();
    let given_back = buyers_of(asks.iter().filter(|a| a.given_back), &locked);
    if capped && !given_back.is_empty() {
        repo::orders::lock_buyers(&mut *tx, &given_back, event_id).await?;
        locked.extend(given_back);
    }
    let Some(tier) = repo::orders::lock_tier_for_holds(&mut *tx, tier_id, event_id).await? else {
        return Ok(asks.iter().map(|_| HoldOutcome::Nothing).collect());
    };
    // The row is ours: everyone who queued while we waited for it joins this batch.
    let (more, more_answers) = still_waiting(gather.take(MAX_BATCH.saturating_sub(asks.len())));
    asks.extend(more);
    answers.extend(more_answers);
    let mut usage = HashMap::new();
    if capped {
        // Buyers' locks are only tried here: waiting for one while holding the row would hold
        // every hold of this tier until another tier's batch of the same buyer (the locks are
        // per buyer and event) commits. A hold whose buyer's lock is held elsewhere goes back
        // to the front of the queue, marked, and leads the next batch.
        let untried = buyers_of(asks.iter(), &locked);
        if !untried.is_empty() {
            locked.extend(repo::orders::try_lock_buyers(&mut *tx, &untried, event_id).await?);
        }
        let (keep, back): (Vec<Queued>, Vec<Queued>) = asks
            .drain(..)
            .zip(answers.drain(..))
            .partition(|(a, _)| locked.contains(&a.user_id));
        gather.put_back(
            back.into_iter()
                .map(|(ask, answer)| {
                    (
                        HoldAsk {
                            given_back: true,
                            ..ask
                        },
                        answer,
                    )
                })
                .collect(),
        );
        (*asks, *answers) = keep.into_iter().unzip();
        let buyers: Vec<Uuid> = locked.iter().copied().collect();
        if !buyers.is_empty() {
            usage = repo::orders::buyers_usage(&mut *tx, &buyers, event_id).await?;
        }
    }
    let asks: &[HoldAsk] = asks;
    // Read after the gathering: every hold is decided as of a moment after it arrived (the
    // event's end, the discount's expiry).
    let now = state.clock.now();
    let caps = Caps {
        active_holds: i64::from(limits.max_active_holds_per_user),
        free_tickets: i64::from(limits.max_free_tickets_per_user),
        sweep_interval: state.config.sweep_interval,
    };
    let decided = decide(&tier, asks, usage, &caps, now);
    let granted: Vec<GrantedHold> = decided
        .iter()
        .zip(asks)
        .filter_map(|(d, a)| match d {
            Decision::Grant {
                unit_price,
                discounted,
            } => Some(GrantedHold {
                order_id: a.order_id,
                reference: a.reference.clone(),
                user_id: a.user_id,
                quantity: a.quantity,
                unit_price: *unit_price,
                discounted: *discounted,
                idempotency: a.idempotency.clone(),
                deferred: a.deferred,
            }),
            _ => None,
        })
        .collect();
    let mut held: HashMap<Uuid, OrderRow> = HashMap::new();
    let mut duplicates = HashSet::new();
    if !granted.is_empty() {
        let hold_seconds = state.config.hold_ttl.as_secs_f64();
        let inserted = repo::orders::insert_holds(
            &mut tx,
            tier_id,
            event_id,
            &tier.currency,
            hold_seconds,
            &granted,
        )
        .await?;
        anyhow::ensure!(
            inserted.orders.len() == granted.len(),
            "the tier's guard refused seats counted under its lock"
        );
        if !inserted.duplicates.is_empty() {
            repo::orders::undo_holds(&mut tx, tier_id, &inserted.duplicates).await?;
            duplicates.extend(inserted.duplicates);
        }
        held = inserted.orders.into_iter().map(|o| (o.id, o)).collect();
    }
    tx.commit().await?;
    Ok(decided
        .into_iter()
        .zip(asks)
        .map(|(d, a)| match d {
            Decision::Grant { .. } if duplicates.contains(&a.order_id) => HoldOutcome::Duplicate,
            Decision::Grant { .. } => held
                .remove(&a.order_id)
                .map_or(HoldOutcome::Nothing, |o| HoldOutcome::Held(Box::new(o))),
            Decision::Refuse(outcome) => outcome,
        })
        .collect())
}

/// The per-buyer caps (0: none).
struct Caps {
    active_holds: i64,
    free_tickets: i64,
    /// How long a hold already past its expiry may wait for the sweeper.
    sweep_interval: Duration,
}

#[derive(Debug)]
enum Decision {
    Grant { unit_price: i64, discounted: bool },
    Refuse(HoldOutcome),
}

/// The batch's decision, in arrival order, exactly as the holds one by one would have
/// decided: each order all or nothing, the discount only when it has room for the whole
/// order, each buyer's caps counting what they were granted earlier in the batch.
fn decide(
    tier: &TierForHolds,
    asks: &[HoldAsk],
    mut usage: HashMap<Uuid, BuyerUsage>,
    caps: &Caps,
    now: time::OffsetDateTime,
) -> Vec<Decision> {
    let mut taken = i64::from(tier.taken);
    let mut discount_taken = i64::from(tier.discount_taken);
    let discount_open =
        tier.discount_price.is_some() && tier.discount_expires_at.is_some_and(|at| at > now);
    let (hold_cap, free_cap) = (caps.active_holds, caps.free_tickets);
    // The first ask of each (buyer, key) in this batch, by position.
    let mut firsts: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut decided: Vec<Decision> = Vec::with_capacity(asks.len());
    for (i, ask) in asks.iter().enumerate() {
        if let Some((key, _)) = &ask.idempotency {
            if let Some(&first) = firsts.get(&(ask.user_id, key.as_str())) {
                // The same request twice in one batch: the first decides. Granted, this one
                // is answered its order (a replay); refused, this one is refused alike.
                decided.push(match &decided[first] {
                    Decision::Grant { .. } => Decision::Refuse(HoldOutcome::Duplicate),
                    Decision::Refuse(outcome) => Decision::Refuse(outcome.clone()),
                });
                continue;
            }
            firsts.insert((ask.user_id, key.as_str()), i);
        }
        let decision = 'decide: {
            let quantity = i64::from(ask.quantity);
            let mine = usage.entry(ask.user_id).or_default();
            if hold_cap > 0 && mine.active_holds >= hold_cap {
                // Until the first hold expires; one already past its expiry waits for the
                // sweeper.
                let wait = match mine.first_expiry {
                    Some(at) if at > now => (at - now).unsigned_abs(),
                    _ => caps.sweep_interval,
                };
                break 'decide Decision::Refuse(HoldOutcome::TooManyHolds {
                    retry_after: wait.max(Duration::from_secs(1)),
                });
            }
            if !tier.open_at(now)
                || ask.quantity > tier.max_per_order
                || taken + quantity > i64::from(tier.quantity)
            {
                break 'decide Decision::Refuse(HoldOutcome::Nothing);
            }
            let discounted = discount_open
                && tier
                    .discount_quantity
                    .is_some_and(|q| discount_taken + quantity <= i64::from(q));
            let unit_price = match (discounted, tier.discount_price) {
                (true, Some(p)) => p,
                _ => tier.price,
            };
            if unit_price == 0 && free_cap > 0 && mine.free_tickets + quantity > free_cap {
                break 'decide Decision::Refuse(HoldOutcome::FreeTicketLimit {
                    cap: free_cap,
                    have: mine.free_tickets,
                });
            }
            taken += quantity;
            if discounted {
                discount_taken += quantity;
            }
            mine.active_holds += 1;
            if unit_price == 0 {
                mine.free_tickets += quantity;
            }
            Decision::Grant {
                unit_price,
                discounted,
            }
        };
        decided.push(decision);
    }
    decided
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn tier(quantity: i32, taken: i32) -> TierForHolds {
        TierForHolds {
            taken,
            quantity,
            price: 5_000,
            currency: "NGN".into(),
            discount_price: None,
            discount_quantity: None,
            discount_taken: 0,
            discount_expires_at: None,
            scheduled: true,
            ends_at: OffsetDateTime::now_utc() + time::Duration::days(1),
            max_per_order: 10,
        }
    }

    fn ask(user_id: Uuid, quantity: i32, key: Option<&str>) -> HoldAsk {
        HoldAsk {
            order_id: Uuid::now_v7(),
            reference: "ord-x".into(),
            user_id,
            quantity,
            idempotency: key.map(|k| (k.to_owned(), "hash".to_owned())),
            deferred: false,
            given_back: false,
        }
    }

    const NO_CAPS: Caps = Caps {
        active_holds: 0,
        free_tickets: 0,
        sweep_interval: Duration::from_secs(30),
    };

    fn granted(d: &[Decision]) -> Vec<Option<(i64, bool)>> {
        d.iter()
            .map(|d| match d {
                Decision::Grant {
                    unit_price,
                    discounted,
                } => Some((*unit_price, *discounted)),
                Decision::Refuse(_) => None,
            })
            .collect()
    }

    #[test]
    fn first_fit_in_arrival_order_each_order_all_or_nothing() {
        let asks = [
            ask(Uuid::now_v7(), 2, None),
            ask(Uuid::now_v7(), 5, None),
            ask(Uuid::now_v7(), 1, None),
            ask(Uuid::now_v7(), 1, None),
        ];
        // 4 seats left: 2 fit, 5 does not (and takes nothing), 1 fits, the last 1 fits too.
        let d = decide(
            &tier(10, 6),
            &asks,
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert_eq!(
            granted(&d),
            [
                Some((5_000, false)),
                None,
                Some((5_000, false)),
                Some((5_000, false))
            ]
        );
        let d = decide(
            &tier(10, 7),
            &asks,
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert_eq!(
            granted(&d),
            [Some((5_000, false)), None, Some((5_000, false)), None]
        );
    }

    #[test]
    fn the_discount_goes_to_orders_it_has_whole_room_for_in_arrival_order() {
        let now = OffsetDateTime::now_utc();
        let mut t = tier(100, 0);
        t.discount_price = Some(3_000);
        t.discount_quantity = Some(3);
        t.discount_expires_at = Some(now + time::Duration::hours(1));
        let asks = [
            ask(Uuid::now_v7(), 2, None),
            ask(Uuid::now_v7(), 2, None),
            ask(Uuid::now_v7(), 1, None),
            ask(Uuid::now_v7(), 1, None),
        ];
        let d = decide(&t, &asks, HashMap::new(), &NO_CAPS, now);
        assert_eq!(
            granted(&d),
            [
                Some((3_000, true)),
                Some((5_000, false)),
                Some((3_000, true)),
                Some((5_000, false))
            ]
        );
        t.discount_expires_at = Some(now - time::Duration::seconds(1));
        let d = decide(&t, &asks[..1], HashMap::new(), &NO_CAPS, now);
        assert_eq!(granted(&d), [Some((5_000, false))]);
    }

    #[test]
    fn caps_count_what_the_same_batch_granted_before() {
        let buyer = Uuid::now_v7();
        let caps = Caps {
            active_holds: 2,
            free_tickets: 3,
            sweep_interval: Duration::from_secs(30),
        };
        let asks: Vec<HoldAsk> = (0..4).map(|_| ask(buyer, 1, None)).collect();
        let d = decide(
            &tier(10, 0),
            &asks,
            HashMap::new(),
            &caps,
            OffsetDateTime::now_utc(),
        );
        assert_eq!(granted(&d).iter().filter(|g| g.is_some()).count(), 2);
        assert!(matches!(
            d[2],
            Decision::Refuse(HoldOutcome::TooManyHolds { .. })
        ));

        // Free tickets: 2 + 2 > 3, the second order is refused; its seats stay for others.
        let mut free = tier(10, 0);
        free.price = 0;
        let other = Uuid::now_v7();
        let caps = Caps {
            active_holds: 0,
            ..caps
        };
        let asks = [
            ask(buyer, 2, None),
            ask(buyer, 2, None),
            ask(other, 2, None),
        ];
        let d = decide(
            &free,
            &asks,
            HashMap::new(),
            &caps,
            OffsetDateTime::now_utc(),
        );
        assert!(matches!(
            d[1],
            Decision::Refuse(HoldOutcome::FreeTicketLimit { cap: 3, have: 2 })
        ));
        assert_eq!(granted(&d)[2], Some((0, false)));
    }

    #[test]
    fn a_repeated_key_whose_first_copy_is_refused_is_refused_alike() {
        let buyer = Uuid::now_v7();
        let asks = [
            ask(buyer, 5, Some("k")),
            ask(buyer, 5, Some("k")),
            ask(buyer, 1, Some("j")),
        ];
        // 3 seats left: the first copy does not fit, so neither does its twin.
        let d = decide(
            &tier(10, 7),
            &asks,
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert!(matches!(d[0], Decision::Refuse(HoldOutcome::Nothing)));
        assert!(matches!(d[1], Decision::Refuse(HoldOutcome::Nothing)));
        assert_eq!(granted(&d)[2], Some((5_000, false)));
    }

    #[test]
    fn a_repeated_key_in_one_batch_is_decided_once_and_closed_events_take_nothing() {
        let buyer = Uuid::now_v7();
        let asks = [
            ask(buyer, 1, Some("k")),
            ask(buyer, 1, Some("k")),
            ask(buyer, 1, Some("j")),
        ];
        let d = decide(
            &tier(10, 0),
            &asks,
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert!(matches!(d[1], Decision::Refuse(HoldOutcome::Duplicate)));
        assert_eq!(granted(&d)[2], Some((5_000, false)));

        let mut closed = tier(10, 0);
        closed.scheduled = false;
        let d = decide(
            &closed,
            &asks[..1],
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert!(matches!(d[0], Decision::Refuse(HoldOutcome::Nothing)));
        let d = decide(
            &tier(100, 0),
            &[ask(buyer, 11, None)],
            HashMap::new(),
            &NO_CAPS,
            OffsetDateTime::now_utc(),
        );
        assert!(matches!(d[0], Decision::Refuse(HoldOutcome::Nothing)));
    }
}
