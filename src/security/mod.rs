//! Cryptography in one place: password hashing, access tokens, TOTP, secrets at rest, and
//! the random tokens (challenges, reset tokens, access keys) the service hands out.

pub mod crypto;
pub mod jwt;
pub mod password;
pub mod signing;
pub mod totp;
