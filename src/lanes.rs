//! Lanes: per-key queues whose runner takes everything waiting as one batch, for work that
//! gets cheaper done together (many holds of one tier in one commit: `service::batcher`; the
//! scans of one event's door in one commit: `service::admission`).
//!
//! A lane exists only while it has work: the first message for a key starts its runner (`ask`
//! spawns it on a task of its own; `send` hands its queue to the caller), the runner takes batches until its queue is empty and then removes
//! the lane. Messages are sent under the registry's lock and a runner removes its lane only
//! under that lock after seeing its queue empty, so no message is ever left in a lane nobody
//! runs.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};

struct Lane<M> {
    tx: mpsc::UnboundedSender<M>,
    /// Messages sent and not yet reported done by the runner.
    pending: Arc<AtomicUsize>,
}

type Registry<K, M> = Arc<Mutex<HashMap<K, Lane<M>>>>;

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
    /// Queues `msg` on `key`'s lane. When the key has no lane (or its runner died), a new
    /// lane is made and `start` is given its queue, to run on a task of its own.
    /// `Err(msg)` only if the registry's lock is poisoned.
    pub fn send(&self, key: K, msg: M, start: impl FnOnce(LaneQueue<K, M>)) -> Result<(), M> {
        let Ok(mut lanes) = self.registry.lock() else {
            return Err(msg);
        };
        let unsent = match lanes.get(&key) {
            Some(lane) => {
                lane.pending.fetch_add(1, Ordering::SeqCst);
                lane.tx.send(msg).err().map(|e| {
                    lane.pending.fetch_sub(1, Ordering::SeqCst);
                    e.0
                })
            }
            None => Some(msg),
        };
        if let Some(msg) = unsent {
            let (tx, rx) = mpsc::unbounded_channel();
            let pending = Arc::new(AtomicUsize::new(1));
            let _ = tx.send(msg);
            lanes.insert(
                key.clone(),
                Lane {
                    tx,
                    pending: pending.clone(),
                },
            );
            start(LaneQueue {
                key,
                rx,
                pending,
                registry: self.registry.clone(),
            });
        }
        Ok(())
    }

    /// Messages of `key`'s lane not reported done yet (waiting, or in the batch being run).
    pub fn pending(&self, key: &K) -> usize {
        self.registry.lock().map_or(0, |lanes| {
            lanes
                .get(key)
                .map_or(0, |l| l.pending.load(Ordering::SeqCst))
        })
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
    /// away cancels nobody else's work. `None`: no answer came (the lanes are unusable, or
    /// the batch ended without answering).
    pub async fn ask<Fut>(
        &self,
        key: K,
        ask: A,
        (max, in_flight): (usize, usize),
        work: impl Fn(K, Vec<(A, oneshot::Sender<O>)>) -> Fut + Send + Sync + 'static,
    ) -> Option<O>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        self.send(key, (ask, answer), |queue| {
            tokio::spawn(run(queue, max, in_flight, work));
        })
        .ok()?;
        answered.await.ok()
    }
}

/// A lane's queue, owned by its runner.
pub struct LaneQueue<K: Hash + Eq, M> {
    key: K,
    rx: mpsc::UnboundedReceiver<M>,
    pending: Arc<AtomicUsize>,
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
            let mut batch = Vec::new();
            while batch.len() < max {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
            let Ok(mut lanes) = self.registry.lock() else {
                return None;
            };
            // Checked again under the lock senders hold: empty now is empty for good.
            if self.rx.is_empty() {
                lanes.remove(&self.key);
                return None;
            }
        }
    }

    /// Waits for at least one message, then takes everything waiting, at most `max`.
    /// Cancel-safe (nothing is taken unless it is returned). `None` only if the registry
    /// itself is gone.
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<M>> {
        let first = self.rx.recv().await?;
        let mut batch = vec![first];
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// The runner finished `n` messages (answered them).
    pub fn done(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Runs a lane until its queue is empty (the lane is then removed): batches of at most
/// `max`, each handed to `work` with the lane's key, up to `in_flight` of them at once. A
/// batch leaves as soon as the previous one has left and a slot is free, so an idle lane adds
/// no waiting (a batch of one goes at once) and a busy one gathers while its batches run.
pub async fn run<K, M, Fut>(
    mut queue: LaneQueue<K, M>,
    max: usize,
    in_flight: usize,
    work: impl Fn(K, Vec<M>) -> Fut,
) where
    K: Hash + Eq + Clone,
    Fut: Future<Output = ()>,
{
    let key = queue.key().clone();
    let mut running = FuturesUnordered::new();
    let start = |batch: Vec<M>| {
        let size = batch.len();
        let done = work(key.clone(), batch);
        async move {
            done.await;
            size
        }
    };
    loop {
        if running.is_empty() {
            // Idle: take what waits, or end the lane (removing it) when nothing does.
            match queue.next_batch(max) {
                Some(b) => running.push(start(b)),
                None => return,
            }
        }
        tokio::select! {
            Some(size) = running.next() => queue.done(size),
            Some(b) = queue.recv_batch(max), if running.len() < in_flight => {
                running.push(start(b));
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
        lanes.send(1, 10, |q| started.push(q)).unwrap();
        lanes.send(1, 11, |_| panic!("the lane exists")).unwrap();
        lanes.send(2, 20, |q| started.push(q)).unwrap();
        assert_eq!((started.len(), lanes.pending(&1)), (2, 2));

        let mut one = started.remove(0);
        assert_eq!(one.next_batch(8), Some(vec![10, 11]));
        lanes.send(1, 12, |_| panic!("still running")).unwrap();
        one.done(2);
        assert_eq!(lanes.pending(&1), 1);
        assert_eq!(one.next_batch(1), Some(vec![12]));
        one.done(1);
        assert_eq!(one.next_batch(8), None);
        assert_eq!(lanes.pending(&1), 0);

        // Gone: the next message starts a new lane.
        let mut restarted = None;
        lanes.send(1, 13, |q| restarted = Some(q)).unwrap();
        assert_eq!(restarted.unwrap().next_batch(8), Some(vec![13]));
    }
}
