//! HTTP: one module per API area. Request/response types and handlers only; rules live in
//! `service/`, SQL in `repo/`.

pub mod attendees;
pub mod auth;
pub mod door;
pub mod event_input;
pub mod events;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod payments;
pub mod responses;
pub mod sandbox;
pub mod tickets;
pub mod users;
pub mod ws;
