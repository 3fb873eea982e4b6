//! The ticketing service as a library, so the binary, the integration tests and the
//! benchmark all drive the same application.

pub mod app;
pub mod clients;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod kv;
pub mod lanes;
pub mod memo;
pub mod queue;
pub mod repo;
pub mod security;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod workers;
