//! Business rules and transactions, one module per area. Handlers and workers call these;
//! these call `repo/`, `clients/`, `queue/` and `security/`.

pub mod admission;
pub mod attendees;
pub mod auth;
pub mod banks;
pub mod batcher;
pub mod budget;
pub mod checkout;
pub mod door;
pub mod drive;
pub mod events;
pub mod holds;
pub mod mail;
pub mod notifications;
pub mod organizers;
pub mod payments;
pub mod payouts;
pub mod purchase;
pub mod rate_limit;
pub mod reconcile;
pub mod refunds;
pub mod sandbox;
pub mod sweeper;
pub mod tickets;
pub mod users;
