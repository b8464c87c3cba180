//! nrtsim: run a scenario of a near-real-time bank data platform in deterministic simulation
//! and judge it for latency and exactly-once delivery.

pub mod compare;
pub mod explore;
pub mod runner;
pub mod scenario;
