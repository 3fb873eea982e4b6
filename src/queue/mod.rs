//! Job payloads and the handle services use to enqueue them. No logic: workers in
//! `workers/` consume these queues and call services.
//!
//! Queues live in Redis (apalis), named `<REDIS_PREFIX>:<queue>`, so deployments and parallel
//! tests never share a queue. Every job here can be lost with Redis and redone: the sweeper
//! re-drives payments, refunds and payouts from PostgreSQL. Mail is not a job: it leaves from
//! an outbox table (`service::mail`).

use crate::{
    domain::ids::{OrderId, PayoutId},
    kv::Redis,
};
use apalis::prelude::TaskSink;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use serde::{Deserialize, Serialize};

/// Settle the payment of one order (verify with Paystack, then pay/issue/mail).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentJob {
    pub reference: String,
}

/// Take the next step of an order's refund (idempotent: the refund's state decides).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundJob {
    pub order_id: OrderId,
}

/// Take the next step of a payout (idempotent: the payout's state decides).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutJob {
    pub payout_id: PayoutId,
}

#[derive(Clone)]
pub struct Queues {
    payments: RedisStorage<PaymentJob>,
    refunds: RedisStorage<RefundJob>,
    payouts: RedisStorage<PayoutJob>,
}

impl Queues {
    pub fn new(redis: &Redis) -> Self {
        Self {
            payments: storage(redis, "payments"),
            refunds: storage(redis, "refunds"),
            payouts: storage(redis, "payouts"),
        }
    }

    pub fn refunds(&self) -> RedisStorage<RefundJob> {
        self.refunds.clone()
    }

    pub fn payouts(&self) -> RedisStorage<PayoutJob> {
        self.payouts.clone()
    }

    /// Queues a refund step. Losing it loses nothing: the sweeper drives every due refund.
    pub async fn refund(&self, order_id: OrderId) -> anyhow::Result<()> {
        let mut sink = self.refunds.clone();
        sink.push(RefundJob { order_id })
            .await
            .map_err(|e| anyhow::anyhow!("enqueueing refund: {e}"))
    }

    /// Queues the first step of these refunds, best effort: if Redis refuses one, the rest
    /// are left to the sweeper too (it drives every due refund), and the caller goes on.
    pub async fn refunds_best_effort(&self, order_ids: &[OrderId]) {
        for order_id in order_ids {
            if let Err(e) = self.refund(*order_id).await {
                tracing::warn!(error = %e, %order_id, "refund jobs not queued; the sweeper will drive them");
                return;
            }
        }
    }

    /// Queues a payout step. Losing it loses nothing: the sweeper drives every due payout.
    pub async fn payout(&self, payout_id: PayoutId) -> anyhow::Result<()> {
        let mut sink = self.payouts.clone();
        sink.push(PayoutJob { payout_id })
            .await
            .map_err(|e| anyhow::anyhow!("enqueueing payout: {e}"))
    }

    pub fn payments(&self) -> RedisStorage<PaymentJob> {
        self.payments.clone()
    }

    pub async fn settle_payment(&self, reference: &str) -> anyhow::Result<()> {
        let mut sink = self.payments.clone();
        sink.push(PaymentJob {
            reference: reference.to_owned(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("enqueueing payment: {e}"))
    }
}

fn storage<T>(redis: &Redis, queue: &str) -> RedisStorage<T> {
    RedisStorage::new(redis.conn()).with_config(QueueConfig::default().queue(redis.key(queue)))
}
