//! Integration tests: the real app over HTTP, one fresh database and Redis prefix per test,
//! fakes for every outbound API. Tests run in parallel.

mod access;
mod architecture;
mod auth;
mod batching;
mod browser;
mod checkout;
mod door;
mod events;
#[allow(dead_code)]
mod fakes;
mod faults;
mod foundation;
#[allow(dead_code)]
mod helpers;
mod hostile;
mod mail;
mod memo;
mod money;
mod organizers;
mod process;
mod realtime;
mod security;
mod selling;
