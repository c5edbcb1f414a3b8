//! The collector's event sources: anything with descriptors to poll and timers (the kmsg
//! descriptor, the eBPF ring buffers). The collector's [`crate::Collector`] watches them in the
//! one child loop (`vigil_ipc_proto::runtime`).

use std::os::fd::RawFd;
use std::time::Instant;

use vigil_ipc_proto::Record;

use crate::util::Stamp;

/// A pollable input of the collector. Register one with [`Sources::add`]; the loop polls every
/// descriptor of [`Source::watch`] for readability.
pub trait Source {
    /// The descriptors to poll for readability, appended to `out`.
    fn watch(&self, out: &mut Vec<RawFd>);
    /// One of its descriptors is readable: read what is there (non-blocking), append records.
    fn on_readable(&mut self, out: &mut Vec<Record>);
    /// Called on every loop turn (timers: flush windows, evictions).
    fn on_tick(&mut self, _now: Instant, _out: &mut Vec<Record>) {}
    /// Called after every collection cycle (metrics the source keeps: counters, gauges).
    fn on_cycle(&mut self, _st: Stamp, _out: &mut Vec<Record>) {}
    /// The collector's warm-up is over: drop what only the start needed (called once).
    fn end_warm_up(&mut self) {}
    /// Latest time the loop must call [`Source::on_tick`].
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Counters added to the role's stats.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// The registry of sources, and the descriptors each watches this turn.
#[derive(Default)]
pub struct Sources {
    list: Vec<Box<dyn Source>>,
    /// How many descriptors each source listed in the last [`Sources::watch`].
    watched: Vec<usize>,
}

impl Sources {
    pub fn add(&mut self, s: Box<dyn Source>) {
        self.list.push(s);
    }

    /// [`Source::end_warm_up`] of each.
    pub fn end_warm_up(&mut self) {
        for s in &mut self.list {
            s.end_warm_up();
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.list.iter().filter_map(|s| s.deadline()).min()
    }

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Record>) {
        for s in &mut self.list {
            s.on_tick(now, out);
        }
    }

    pub fn cycle(&mut self, st: Stamp, out: &mut Vec<Record>) {
        for s in &mut self.list {
            s.on_cycle(st, out);
        }
    }

    pub fn counters(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.list.iter().flat_map(|s| s.counters())
    }

    /// Every source's descriptors, in order, appended to `out`.
    pub fn watch(&mut self, out: &mut Vec<RawFd>) {
        self.watched.clear();
        for s in &self.list {
            let before = out.len();
            s.watch(out);
            self.watched.push(out.len() - before);
        }
    }

    /// `ready[i]`: whether the i-th descriptor of the last [`Sources::watch`] is readable; each
    /// source with a readable descriptor reads once.
    pub fn ready(&mut self, ready: &[bool], out: &mut Vec<Record>) {
        let mut at = 0;
        for (s, &n) in self.list.iter_mut().zip(&self.watched) {
            if ready.get(at..at + n).is_some_and(|r| r.iter().any(|&b| b)) {
                s.on_readable(out);
            }
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source with `fds` descriptors that counts its reads.
    struct Counting {
        fds: Vec<RawFd>,
        reads: std::rc::Rc<std::cell::Cell<u32>>,
    }

    impl Source for Counting {
        fn watch(&self, out: &mut Vec<RawFd>) {
            out.extend(&self.fds);
        }
        fn on_readable(&mut self, _out: &mut Vec<Record>) {
            self.reads.set(self.reads.get() + 1);
        }
    }

    #[test]
    fn a_ready_descriptor_wakes_the_source_that_listed_it() {
        let a = std::rc::Rc::new(std::cell::Cell::new(0));
        let b = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut s = Sources::default();
        s.add(Box::new(Counting {
            fds: vec![3],
            reads: a.clone(),
        }));
        s.add(Box::new(Counting {
            fds: vec![4, 5, 6],
            reads: b.clone(),
        }));
        let mut fds = Vec::new();
        s.watch(&mut fds);
        assert_eq!(fds, [3, 4, 5, 6]);
        let mut out = Vec::new();
        s.ready(&[false, false, false, true], &mut out);
        assert_eq!((a.get(), b.get()), (0, 1));
        s.ready(&[true, false, true, true], &mut out);
        assert_eq!((a.get(), b.get()), (1, 2), "one read per source and turn");
        s.ready(&[false; 4], &mut out);
        assert_eq!((a.get(), b.get()), (1, 2));
    }
}
