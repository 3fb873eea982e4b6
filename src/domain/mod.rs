//! Pure types and rules, no I/O.

pub mod clock;
pub mod cursor;
pub mod email;
pub mod fees;
pub mod geo;
pub mod ids;
pub mod image;
pub mod money;
pub mod qr;
pub mod status;
