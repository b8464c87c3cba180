//! Fault injection for nrtsim: fault kinds and their scenario entries, targets resolved when a
//! fault starts, and the injector that runs an explicit schedule against the simulator's
//! [`Control`] surface.

pub mod control;
pub mod schedule;
pub mod spec;
pub mod swarm;
pub mod target;
pub mod world;

pub use control::Control;
pub use schedule::{FaultEvent, Injector};
pub use spec::{FaultKind, FaultLatency, FaultSpec, FaultSpecError, Side};
pub use swarm::{shrink, swarm_schedule};
pub use target::{glob_matches, Target, TargetError};
