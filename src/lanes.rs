//! Lanes: per-key queues whose runner takes everything waiting as one batch, for work that
//! gets cheaper done together (many holds of one tier in one commit: `service::batcher`; the
//! scans of one event's door in one commit: `service::admission`).
//!
//! A lane exists only while it has work: the first message for a key starts its runner (`ask`
//! spawns it on a task of its own; `send` hands its queue to the caller), the runner takes
//! batches until its queue is empty and then removes the lane. Messages are queued under the
//! registry's lock and a runner removes its lane only under that lock after seeing its queue
//! empty, so no message is ever left in a lane nobody runs. A runner that dies (its task
//! panicked or was dropped) takes its lane out of the registry as it goes, and the messages
//! still queued are dropped with it, so their askers hear "no answer" at once instead of
//! waiting on a lane nobody runs.
//!
//! A batch may also *gather* later: work whose batches wait for something shared (the holds'
//! tier row, locked by another instance's batch) takes what arrived meanwhile once the wait
//! is over (`Gather::take`), so a batch leaves with everything that queued behind it.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::{Notify, oneshot};

struct Lane<M> {
    waiting: Mutex<VecDeque<M>>,
    /// Woken on every message queued. `Notify::notify_one` keeps a permit (one at most) when
    /// nobody waits, so a message queued between the runner's look and its wait is not
    /// missed; the runner drains everything each time it wakes.
    arrived: Notify,
    /// Messages queued and not yet reported done by the runner.
    pending: AtomicUsize,
}

impl<M> Lane<M> {
    fn queue(&self) -> MutexGuard<'_, VecDeque<M>> {
        // Nothing panics while holding it (pushes and drains only); a poisoned queue is
        // still a consistent queue.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Up to `max` of the messages waiting, in arrival order.
    fn drain(&self, max: usize) -> Vec<M> {
        let mut queue = self.queue();
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }
}

type Registry<K, M> = Arc<Mutex<HashMap<K, Arc<Lane<M>>>>>;

/// The registry's map. Nothing panics while holding it (lookups, inserts and removals only),
/// so a poisoned lock still guards a consistent map; going on keeps the promise that no
/// message is left in a lane nobody runs.
fn lanes_of<K, M>(registry: &Registry<K, M>) -> MutexGuard<'_, HashMap<K, Arc<Lane<M>>>> {
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One instance's lanes.
pub struct Lanes<K, M> {
    registry: Registry<K, M>,
}

impl<K, M> Default for Lanes<K, M> {
    fn default() -> Self {
        Self {
            registry: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, M> Lanes<K, M> {
    /// Queues `msg` on `key`'s lane. When the key has no lane, a new lane is made and `start`
    /// is given its queue, to run on a task of its own. `start` is called after the registry's
    /// lock is released (a queue dropped at once — a task refused at shutdown — takes its
    /// lane out again under that lock; messages queued meanwhile go with it).
    pub fn send(&self, key: K, msg: M, start: impl FnOnce(LaneQueue<K, M>)) {
        let queue = {
            let mut lanes = lanes_of(&self.registry);
            if let Some(lane) = lanes.get(&key) {
                lane.pending.fetch_add(1, Ordering::SeqCst);
                lane.queue().push_back(msg);
                lane.arrived.notify_one();
                return;
            }
            let lane = Arc::new(Lane {
                waiting: Mutex::new(VecDeque::from([msg])),
                arrived: Notify::new(),
                pending: AtomicUsize::new(1),
            });
            lanes.insert(key.clone(), lane.clone());
            LaneQueue {
                key,
                lane,
                registry: self.registry.clone(),
            }
        };
        start(queue);
    }

    /// Messages of `key`'s lane not reported done yet (waiting, or in a batch being run).
    pub fn pending(&self, key: &K) -> usize {
        lanes_of(&self.registry)
            .get(key)
            .map_or(0, |l| l.pending.load(Ordering::SeqCst))
    }
}

impl<K, A, O> Lanes<K, (A, oneshot::Sender<O>)>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Send + 'static,
    O: Send + 'static,
{
    /// Queues `ask` on `key`'s lane and waits for its answer. When the key has no lane, one
    /// is started on a task of its own, running batches of at most `max` through `work`, up to
    /// `in_flight` at once (`run`). The batch runs on the lane's task, so a caller who goes
    /// away cancels nobody else's work. `None`: no answer came (the batch ended without
    /// answering, or the lane's runner died).
    pub async fn ask<Fut>(
        &self,
        key: K,
        ask: A,
        (max, in_flight): (usize, usize),
        work: impl Fn(K, Vec<(A, oneshot::Sender<O>)>, Gather<(A, oneshot::Sender<O>)>) -> Fut
        + Send
        + Sync
        + 'static,
    ) -> Option<O>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        self.send(key, (ask, answer), |queue| {
            tokio::spawn(run(queue, max, in_flight, work));
        });
        answered.await.ok()
    }
}

/// A lane's queue, owned by its runner. Dropping it (the runner ended or died) takes the lane
/// out of the registry if it is still there.
pub struct LaneQueue<K: Hash + Eq, M> {
    key: K,
    lane: Arc<Lane<M>>,
    registry: Registry<K, M>,
}

impl<K: Hash + Eq, M> LaneQueue<K, M> {
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Everything waiting, at most `max`; `None` once the queue is empty, the lane then
    /// removed (the runner ends; the next message starts a new lane).
    pub fn next_batch(&mut self, max: usize) -> Option<Vec<M>> {
        loop {
            let batch = self.lane.drain(max);
            if !batch.is_empty() {
                return Some(batch);
            }
            let lanes = &mut lanes_of(&self.registry);
            // Checked again under the lock senders hold: empty now is empty for good.
            if self.lane.queue().is_empty() {
                lanes.remove(&self.key);
                return None;
            }
        }
    }

    /// Waits for at least one message, then takes everything waiting, at most `max`.
    /// Cancel-safe (nothing is taken unless it is returned).
    pub async fn recv_batch(&mut self, max: usize) -> Vec<M> {
        loop {
            let batch = self.lane.drain(max);
            if !batch.is_empty() {
                return batch;
            }
            self.lane.arrived.notified().await;
        }
    }

    /// A handle a batch uses to take what queued after it left (`Gather::take`).
    pub fn gather(&self) -> Gather<M> {
        Gather {
            lane: self.lane.clone(),
            taken: Arc::default(),
            given_back: Arc::default(),
        }
    }

    /// The runner finished `n` messages (answered them).
    pub fn done(&self, n: usize) {
        self.lane.pending.fetch_sub(n, Ordering::SeqCst);
    }
}

impl<K: Hash + Eq, M> Drop for LaneQueue<K, M> {
    fn drop(&mut self) {
        let mut lanes = lanes_of(&self.registry);
        if lanes
            .get(&self.key)
            .is_some_and(|l| Arc::ptr_eq(l, &self.lane))
        {
            lanes.remove(&self.key);
        }
    }
}

/// One batch's hold on its lane's queue, to take the messages that arrived after the batch
/// left (they are then the batch's to answer; the runner counts them done with it) and to
/// give back those it cannot run.
pub struct Gather<M> {
    lane: Arc<Lane<M>>,
    /// Messages taken, and messages given back (of the batch's own or taken).
    taken: Arc<AtomicUsize>,
    given_back: Arc<AtomicUsize>,
}

impl<M> Gather<M> {
    /// Up to `max` of the messages waiting now, in arrival order; never waits.
    pub fn take(&self, max: usize) -> Vec<M> {
        let more = self.lane.drain(max);
        self.taken.fetch_add(more.len(), Ordering::SeqCst);
        more
    }

    /// Gives back messages this batch cannot run after all (its own or taken): they go to
    /// the front of the queue, in their order, for the next batch.
    pub fn put_back(&self, back: Vec<M>) {
        if back.is_empty() {
            return;
        }
        self.given_back.fetch_add(back.len(), Ordering::SeqCst);
        let mut queue = self.lane.queue();
        for m in back.into_iter().rev() {
            queue.push_front(m);
        }
        drop(queue);
        self.lane.arrived.notify_one();
    }
}

/// Runs a lane until its queue is empty (the lane is then removed): batches of at most
/// `max`, each handed to `work` with the lane's key and a `Gather` for what queues later, up
/// to `in_flight` of them at once. A batch leaves as soon as a slot is free, so an idle lane
/// adds no waiting (a batch of one goes at once) and a busy one gathers while its batches run.
pub async fn run<K, M, Fut>(
    mut queue: LaneQueue<K, M>,
    max: usize,
    in_flight: usize,
    work: impl Fn(K, Vec<M>, Gather<M>) -> Fut,
) where
    K: Hash + Eq + Clone,
    Fut: Future<Output = ()>,
{
    let key = queue.key().clone();
    let mut running = FuturesUnordered::new();
    let start = |batch: Vec<M>, gather: Gather<M>| {
        let size = batch.len();
        let (taken, given_back) = (gather.taken.clone(), gather.given_back.clone());
        let done = work(key.clone(), batch, gather);
        async move {
            done.await;
            size + taken.load(Ordering::SeqCst) - given_back.load(Ordering::SeqCst)
        }
    };
    loop {
        if running.is_empty() {
            // Idle: take what waits, or end the lane (removing it) when nothing does.
            match queue.next_batch(max) {
                Some(b) => running.push(start(b, queue.gather())),
                None => return,
            }
        }
        tokio::select! {
            Some(size) = running.next() => queue.done(size),
            b = queue.recv_batch(max), if running.len() < in_flight => {
                let gather = queue.gather();
                running.push(start(b, gather));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_starts_on_its_first_message_batches_the_rest_and_ends_when_empty() {
        let lanes: Lanes<u8, u32> = Lanes::default();
        let mut started = Vec::new();
        lanes.send(1, 10, |q| started.push(q));
        lanes.send(1, 11, |_| panic!("the lane exists"));
        lanes.send(2, 20, |q| started.push(q));
        assert_eq!((started.len(), lanes.pending(&1)), (2, 2));

        let mut one = started.remove(0);
        assert_eq!(one.next_batch(8), Some(vec![10, 11]));
        lanes.send(1, 12, |_| panic!("still running"));
        one.done(2);
        assert_eq!(lanes.pending(&1), 1);
        assert_eq!(one.next_batch(1), Some(vec![12]));
        one.done(1);
        assert_eq!(one.next_batch(8), None);
        assert_eq!(lanes.pending(&1), 0);

        // Gone: the next message starts a new lane.
        let mut restarted = None;
        lanes.send(1, 13, |q| restarted = Some(q));
        assert_eq!(restarted.unwrap().next_batch(8), Some(vec![13]));
    }

    #[test]
    fn a_batch_gathers_what_queued_after_it_left_and_counts_it_done() {
        let lanes: Lanes<u8, u32> = Lanes::default();
        let mut started = None;
        lanes.send(1, 10, |q| started = Some(q));
        let mut queue = started.unwrap();
        let batch = queue.next_batch(8).unwrap();
        let gather = queue.gather();
        lanes.send(1, 11, |_| panic!("the lane exists"));
        lanes.send(1, 12, |_| panic!("the lane exists"));
        lanes.send(1, 13, |_| panic!("the lane exists"));
        assert_eq!((batch, gather.take(2)), (vec![10], vec![11, 12]));
        // One of them cannot go in this batch: back to the front, before 13.
        gather.put_back(vec![12]);
        assert_eq!(gather.given_back.load(Ordering::SeqCst), 1);
        queue.done(2);
        assert_eq!(lanes.pending(&1), 2);
        assert_eq!(queue.next_batch(8), Some(vec![12, 13]));
        assert_eq!(gather.take(8), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_lane_whose_runner_dies_is_removed_and_its_askers_hear_no_answer() {
        let lanes: Lanes<u8, (u32, oneshot::Sender<u32>)> = Lanes::default();
        // The work panics: the runner's task dies with the batch, the queued ask with it.
        let work = |_: u8, _: Vec<(u32, oneshot::Sender<u32>)>, _| async { panic!("boom") };
        // A deadline, not a pause: a lane left behind by its dead runner never answers.
        let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(
                lanes.ask(1, 10, (1, 1), work),
                lanes.ask(1, 11, (1, 1), work)
            )
        })
        .await
        .expect("the queued ask hears that no answer comes");
        assert_eq!((first, second), (None, None));
        assert_eq!(lanes.pending(&1), 0, "the dead lane is gone");
        // The next ask starts a new lane that answers.
        let answer = lanes
            .ask(1, 12, (8, 1), |_, batch, _| async move {
                for (n, tx) in batch {
                    let _ = tx.send(n + 1);
                }
            })
            .await;
        assert_eq!(answer, Some(13));
    }
}
