//! The pluggable part of the event loop: anything with a descriptor to poll.

use std::os::fd::RawFd;
use std::time::Instant;

use vigil_ipc_proto::Record;

use crate::util::Stamp;

/// A pollable input of the collector (the kmsg descriptor, BPF ring buffers, ...). Register one
/// with [`Sources::add`]; the loop polls [`Source::raw_fd`] for readability.
pub trait Source {
    fn raw_fd(&self) -> RawFd;
    /// The descriptor is readable: read what is there (non-blocking) and append records.
    fn on_readable(&mut self, out: &mut Vec<Record>);
    /// Called on every loop turn (timers: flush windows, evictions).
    fn on_tick(&mut self, _now: Instant, _out: &mut Vec<Record>) {}
    /// Called after every collection cycle (metrics the source keeps: counters, gauges).
    fn on_cycle(&mut self, _st: Stamp, _out: &mut Vec<Record>) {}
    /// Latest time the loop must call [`Source::on_tick`].
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Counters added to the role's stats.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// The registry of sources.
#[derive(Default)]
pub struct Sources {
    pub list: Vec<Box<dyn Source>>,
}

impl Sources {
    pub fn add(&mut self, s: Box<dyn Source>) {
        self.list.push(s);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.list.iter().filter_map(|s| s.deadline()).min()
    }
}
