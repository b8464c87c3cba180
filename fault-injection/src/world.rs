//! The simulated world as a [`Control`] surface: fault schedules drive its mechanisms.

use crate::control::Control;
use crate::spec::FaultLatency;
use nrtsim_history::TopicName;
use nrtsim_sim::{LatencyRange, TopicPartition, World};

impl Control for World {
    fn host_names(&self) -> Vec<String> {
        World::host_names(self).to_vec()
    }

    fn leader_of(&self, topic: TopicName, partition: u32) -> Option<String> {
        World::leader_of(self, TopicPartition::new(topic, partition))
    }

    fn followers_of(&self, topic: TopicName, partition: u32) -> Vec<String> {
        World::followers_of(self, TopicPartition::new(topic, partition))
    }

    fn crash(&mut self, host: &str) {
        World::crash(self, host);
    }

    fn restart(&mut self, host: &str) {
        World::restart(self, host);
    }

    fn power_loss(&mut self, host: &str) {
        World::power_loss(self, host);
    }

    fn set_produce_errors(&mut self, host: &str, rate: f64) {
        World::set_produce_errors(self, host, rate);
    }

    fn set_slowdown(&mut self, host: &str, factor: f64) {
        World::set_slowdown(self, host, factor);
    }

    fn partition(&mut self, a: &[String], b: &[String]) {
        World::partition(self, a, b);
    }

    fn repair(&mut self, a: &[String], b: &[String]) {
        World::repair(self, a, b);
    }

    fn partition_oneway(&mut self, from: &[String], to: &[String]) {
        World::partition_oneway(self, from, to);
    }

    fn repair_oneway(&mut self, from: &[String], to: &[String]) {
        World::repair_oneway(self, from, to);
    }

    fn hold(&mut self, a: &[String], b: &[String]) {
        World::hold(self, a, b);
    }

    fn release(&mut self, a: &[String], b: &[String]) {
        World::release(self, a, b);
    }

    fn set_latency(&mut self, a: &[String], b: &[String], latency: Option<FaultLatency>) {
        let range = latency.map(|l| LatencyRange {
            min: l.min,
            max: l.max,
        });
        World::set_latency(self, a, b, range);
    }

    fn fail_over(&mut self, host: &str) {
        World::fail_over(self, host);
    }
}
