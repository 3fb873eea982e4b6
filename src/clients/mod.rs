//! Outbound integrations, each a trait with the real HTTP client and a development stand-in.
//! Every base URL comes from `Config`, so tests point them at local fakes.

pub mod mail;
pub mod media;
pub mod paystack;
