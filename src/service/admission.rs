//! Group admission at the door: the online scans of one event that arrive together share one
//! commit.
//!
//! An online check-in used to be one guarded update and one commit per scan, and the door was
//! bound by a durable commit per admission (1,500–1,850 a second with 8 gates here,
//! `docs/inventory.md`). Each instance now keeps one *lane* per event with scans waiting
//! (`lanes`, as the holds do per tier): the scans that wait are checked in by one statement,
//! so one commit, and each gate is answered only after that commit.
//!
//! What stays true:
//! - Each scan is still its own guarded update (`valid` → `used`, this event only), re-checked
//!   by PostgreSQL on the latest row version after waiting for any concurrent scan of the same
//!   ticket, so no interleaving of gates, batches or instances admits a ticket twice.
//! - A ticket scanned twice in one batch is applied once, for its first scan in arrival
//!   order; the other scans are answered as the ticket stands after it (already used, at that
//!   admission), like a second gate a moment later.
//! - The keys go to PostgreSQL sorted, so two batches lock shared tickets in one order and
//!   do not deadlock each other; a deadlock with another writer of many tickets (a refund
//!   voiding an order's tickets) is tried again, up to three tries.
//! - A batch whose statement fails admits nothing (it is one statement) and answers its own
//!   scans 503 with `Retry-After`; other batches are untouched. (If the connection is lost
//!   after PostgreSQL committed, the gates hear 503 all the same and a retry is told
//!   `ticket_already_used` with the admission's time: the truth, seconds old.) A scan whose
//!   gate went away while it waited is not applied.
//! - Known cost: a ticket row locked elsewhere holds up its batch, and with every batch in
//!   flight waiting, that event's later scans on this instance, until the lock is released. Ticket
//!   rows are locked only by short transactions (a refund's or a cancellation's void).
//! - The event is read once per batch and every scan's scanner checked against its owner, so
//!   a stranger's scan admits nothing whatever batch it rides in.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::{
    repo::{
        self,
        tickets::{ScanAsk, ScanOutcome},
    },
    state::{AppState, ScanQueued},
};

/// Most scans one statement checks in.
const MAX_BATCH: usize = 256;

/// Batches of one event's lane in flight at once. Scans of different tickets do not contend,
/// so batches commit beside each other (PostgreSQL flushes concurrent commits together);
/// four bound the connections one event's door takes from the pool while keeping a busy
/// door's gates from queueing behind a single round trip.
pub const IN_FLIGHT: usize = 4;

/// Queues a scan on its event's lane and waits for the commit that decides it.
pub async fn admit(state: &AppState, event_id: Uuid, ask: ScanAsk) -> ScanOutcome {
    let lane_state = state.clone();
    state
        .admissions
        .ask(
            event_id,
            ask,
            (MAX_BATCH, IN_FLIGHT),
            // Scans do not queue at one shared row (each locks its own tickets), so a batch
            // has no wait to gather behind: what arrives meanwhile leaves in the next batch.
            move |event_id, batch, _gather| {
                let state = lane_state.clone();
                async move { run_batch(&state, event_id, batch).await }
            },
        )
        .await
        .unwrap_or_else(|| ScanOutcome::Failed("the scan's batch ended without an answer".into()))
}

/// Checks one batch in, then answers each of its gates.
async fn run_batch(state: &AppState, event_id: Uuid, batch: Vec<ScanQueued>) {
    let (asks, answers): (Vec<ScanAsk>, Vec<_>) = batch
        .into_iter()
        .filter(|(_, answer)| !answer.is_closed())
        .unzip();
    if asks.is_empty() {
        return;
    }
    metrics::histogram!("ticketing_admission_batch_size").record(asks.len() as f64);
    let outcomes = check_in_batch(state, event_id, &asks).await;
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        // A gate gone during the commit: its ticket is admitted all the same, and a second
        // scan answers `ticket_already_used` with the time.
        let _ = answer.send(outcome);
    }
}

/// Tries after a deadlock: PostgreSQL broke it by cancelling the batch's statement (atomic,
/// so nothing of it stands). Two batches lock shared tickets in one order, but another writer
/// of many tickets (a refund voiding an order's tickets) does not, and a door should not
/// answer 503 for that.
const DEADLOCK_TRIES: u32 = 3;

/// `repo::tickets::check_in_many`, tried again (up to `DEADLOCK_TRIES` in all) after a
/// deadlock, each time after a short pause. The pause is not there to hide a race: a retry
/// sent at once can take the row the cancelled statement held before the other writer,
/// woken by the cancellation, takes it (an aborted lock needs no queue), and so make the
/// same cycle again; a few milliseconds let that writer finish first. Seen in a loaded test
/// run: two deadlocks in a row.
async fn check_in_many(
    state: &AppState,
    event: &repo::events::EventRow,
    keys: &[String],
    gates: &[String],
) -> sqlx::Result<Vec<(usize, repo::tickets::TicketRow)>> {
    let mut tries = 1;
    loop {
        match repo::tickets::check_in_many(&state.db, event, keys, gates).await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("40P01") && tries < DEADLOCK_TRIES =>
            {
                metrics::counter!("ticketing_admission_deadlocks_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(25 * u64::from(tries))).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// The outcomes of `asks`, in their order.
async fn check_in_batch(state: &AppState, event_id: Uuid, asks: &[ScanAsk]) -> Vec<ScanOutcome> {
    let failed = |e: &sqlx::Error, what: &str| {
        tracing::warn!(error = %e, %event_id, scans = asks.len(), "{what}");
        metrics::counter!("ticketing_admission_batches_failed_total").increment(1);
        ScanOutcome::Failed(format!("{what}: {e}"))
    };
    let event = match repo::events::find(&state.db, event_id).await {
        Ok(event) => event,
        Err(e) => {
            let outcome = failed(&e, "the event could not be read; nothing admitted");
            return asks.iter().map(|_| outcome.clone()).collect();
        }
    };
    let owner = event.as_ref().map(|e| e.organizer_user_id);
    let mut outcomes: Vec<Option<ScanOutcome>> = asks
        .iter()
        .map(|a| (owner != Some(a.user_id)).then_some(ScanOutcome::NotOwner))
        .collect();

    // The first scan of each ticket, keys sorted (the lock order).
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, a) in asks.iter().enumerate() {
        if outcomes[i].is_none() {
            first.entry(a.access_key.as_str()).or_insert(i);
        }
    }
    let applied: Vec<usize> = first.values().copied().collect();
    let (keys, gates): (Vec<String>, Vec<String>) = first
        .iter()
        .map(|(key, &i)| ((*key).to_owned(), asks[i].gate.clone()))
        .unzip();
    if let (false, Some(event)) = (keys.is_empty(), &event) {
        match check_in_many(state, event, &keys, &gates).await {
            Ok(admitted) => {
                for (n, ticket) in admitted {
                    if let Some(&i) = applied.get(n) {
                        outcomes[i] = Some(ScanOutcome::Admitted(Box::new(ticket)));
                    }
                }
            }
            Err(e) => {
                let outcome = failed(&e, "the scans could not be checked in; nothing admitted");
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| outcome.clone()))
                    .collect();
            }
        }
    }

    // Why the others were not admitted, read after the commit (so a repeated scan sees the
    // admission its batch just made).
    let unanswered: BTreeSet<&str> = asks
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_none())
        .map(|(a, _)| a.access_key.as_str())
        .collect();
    if !unanswered.is_empty() {
        let keys: Vec<String> = unanswered.into_iter().map(str::to_owned).collect();
        match repo::tickets::find_by_keys(&state.db, &keys).await {
            Ok(found) => {
                for (a, o) in asks.iter().zip(outcomes.iter_mut()) {
                    if o.is_none() {
                        *o = Some(ScanOutcome::Refused(found.get(&a.access_key).cloned()));
                    }
                }
            }
            // The admitted are still answered as admitted; only the others fail (the batch
            // itself did not: no failed-batch count).
            Err(e) => {
                tracing::warn!(error = %e, %event_id, "refused scans could not be explained");
                let outcome =
                    ScanOutcome::Failed(format!("refused scans could not be explained: {e}"));
                for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(outcome.clone());
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| ScanOutcome::Failed("the scan was not decided".into())))
        .collect()
}
