//! All SQL. Functions take any executor (`impl PgExecutor`), so a service can run several
//! of them in one transaction. State changes are guarded statements, never read-then-write.

pub mod events;
pub mod ledger;
pub mod orders;
pub mod organizers;
pub mod password_resets;
pub mod payment_events;
pub mod payouts;
pub mod reconcile;
pub mod refunds;
pub mod tickets;
pub mod tiers;
pub mod users;

/// True when `err` is a unique violation of `constraint`.
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
