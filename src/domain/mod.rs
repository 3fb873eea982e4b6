//! Pure types and rules, no I/O.

pub mod email;
pub mod fees;
