//! All SQL. Functions take any executor (`impl PgExecutor`), so a service can run several
//! of them in one transaction. State changes are guarded statements, never read-then-write.

pub mod attendees;
pub mod events;
pub mod ledger;
pub mod mail;
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
