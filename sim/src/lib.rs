//! The deterministic world of nrtsim on turmoil: simulated brokers, the controller, a host for
//! every job, the cost model, and the control surface that fault injection drives.

pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod drain;
pub mod group_coordinator;
pub mod host_env;
pub mod partition_log;
pub mod progress;
pub mod schema_registry;
pub mod txn_coordinator;
pub mod wire;
pub mod world;

pub use config::{LatencyRange, NetworkConfig, PlatformConfig};
pub use nrtsim_pipeline::TopicPartition;
pub use world::{host_names, RunSpec, SimError, World};
