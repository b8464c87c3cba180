//! The simulator's control surface: the mechanisms fault injection drives. The simulator
//! knows how to crash a host or cut a link; the fault schedule decides when.

use crate::spec::FaultLatency;
use nrtsim_history::TopicName;

/// What the simulator lets fault injection observe and do. Every method acts at once, at the
/// current simulated time; link methods act on every link between a host of one side and a host
/// of the other.
pub trait Control {
    /// Every host of the simulation, in a stable order.
    fn host_names(&self) -> Vec<String>;
    /// The host that leads a topic partition now, if it has a leader.
    fn leader_of(&self, topic: TopicName, partition: u32) -> Option<String>;
    /// The hosts that follow a topic partition now.
    fn followers_of(&self, topic: TopicName, partition: u32) -> Vec<String>;
    /// Kills a host: its connections break and its in-memory state is lost.
    fn crash(&mut self, host: &str);
    /// Starts a crashed host again.
    fn restart(&mut self, host: &str);
    /// Cuts `host`'s power: like [`Control::crash`], and a broker also loses the log tail it
    /// had not flushed. It stays down until [`Control::restart`].
    fn power_loss(&mut self, host: &str);
    /// Makes broker `host` answer a `rate` share of the produce batches it appends with a
    /// retriable error; 0 stops it. Other hosts ignore it.
    fn set_produce_errors(&mut self, host: &str, rate: f64);
    /// Makes the host's work take `factor` times as long (1 is its normal pace).
    fn set_slowdown(&mut self, host: &str, factor: f64);
    /// Drops all traffic between the two sides, both ways.
    fn partition(&mut self, a: &[String], b: &[String]);
    /// Heals a [`Control::partition`].
    fn repair(&mut self, a: &[String], b: &[String]);
    /// Drops traffic from `from` to `to`; the other direction still flows.
    fn partition_oneway(&mut self, from: &[String], to: &[String]);
    /// Heals a [`Control::partition_oneway`].
    fn repair_oneway(&mut self, from: &[String], to: &[String]);
    /// Holds traffic between the two sides without losing it.
    fn hold(&mut self, a: &[String], b: &[String]);
    /// Delivers the traffic a [`Control::hold`] kept back, in order.
    fn release(&mut self, a: &[String], b: &[String]);
    /// Sets the latency of the links between the two sides; `None` restores the network default.
    fn set_latency(&mut self, a: &[String], b: &[String], latency: Option<FaultLatency>);
    /// Starts the standby instance of stream task `host` (the first one keeps running).
    fn fail_over(&mut self, host: &str);
}
