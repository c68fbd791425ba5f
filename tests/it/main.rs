//! The integration tests, in one binary to save link time.
//!
//! Every test writes real Parquet files (or uses the demo generator) and runs
//! the real engine or the real `driftwatch` binary.

mod agent;
mod anomaly;
mod baseline;
mod checks;
mod cli;
mod common;
mod deploy;
mod docs;
mod drift;
mod edge_cases;
mod errors;
mod faults;
mod golden;
mod hardening;
mod html;
mod http_api;
mod iceberg_rest;
mod kafka;
mod object_store;
mod one_scan;
mod streams;
mod tables;
mod telemetry;
mod webhooks;
