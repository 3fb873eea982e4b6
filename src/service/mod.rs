//! Business rules and transactions, one module per area. Handlers and workers call these;
//! these call `repo/`, `clients/`, `queue/` and `security/`.

pub mod auth;
pub mod banks;
pub mod events;
pub mod notifications;
pub mod organizers;
pub mod payments;
pub mod purchase;
pub mod rate_limit;
pub mod tickets;
pub mod users;
