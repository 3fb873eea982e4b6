//! Reconciliation: proves DESIGN.md's invariants (seats, tickets, ledger, refunds, payouts)
//! for an event, an organizer or the platform, and lists money that is stuck. The checks
//! themselves are one SQL query (`repo::reconcile`); this is what callers use.

use sqlx::PgPool;
use uuid::Uuid;

pub use crate::repo::reconcile::Finding;

#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub event_id: Option<Uuid>,
    pub organizer_id: Option<Uuid>,
}

pub struct Report {
    pub mismatches: Vec<Finding>,
    pub stuck: Vec<Finding>,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.mismatches.is_empty()
    }
}

pub async fn check(db: &PgPool, scope: Scope) -> sqlx::Result<Report> {
    let (mismatches, stuck) =
        crate::repo::reconcile::findings(db, scope.event_id, scope.organizer_id)
            .await?
            .into_iter()
            .partition(|f| f.severity == "mismatch");
    Ok(Report { mismatches, stuck })
}

/// One line per finding, for people and for grep.
pub fn line(f: &Finding) -> String {
    format!(
        "{} {} event={} subject={} {}",
        f.severity.to_uppercase(),
        f.check,
        f.event_id,
        f.subject,
        f.detail
    )
}
