//! Business rules and transactions, one module per area. Handlers and workers call these;
//! these call `repo/`, `clients/`, `queue/` and `security/`.

pub mod auth;
pub mod notifications;
pub mod rate_limit;
