//! A minimal collector run loop carrying only the eBPF data path, so the records reach the
//! shipper end to end until the collector's own event loop exists (that loop replaces this one
//! and calls [`super::start`], [`super::EbpfSources::service`] itself).
//!
//! Hello on both peer channels, the shipper's `Resume`, eBPF start-up over the privhelper
//! channel, then one poll loop: supervisor (stats, shutdown), shipper (acks), ring buffers
//! and the eBPF timers; records go out in batches of at most `collector.max_batch_records`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use vigil_ipc_proto::{
    Batch, Channel, ChildToSupervisor, CollectorToShipper, InitConfig, ProtoError, Record, Role,
    RoleStats, ShipperToCollector, SupervisorToChild,
};

use super::EbpfSources;

fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll on a live array of pollfd of the given length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r <= 0 {
        return vec![false; fds.len()];
    }
    pfds.iter().map(|p| p.revents != 0).collect()
}

pub fn run(
    init: &InitConfig,
    control: Channel,
    mut privhelper: Channel,
    mut shipper: Channel,
) -> Result<(), ProtoError> {
    let mut control = control;
    privhelper.handshake(Role::Collector, Some(Role::Privhelper))?;
    shipper.handshake(Role::Collector, Some(Role::Shipper))?;
    let _resume: ShipperToCollector = shipper.recv()?;
    let mut ebpf: EbpfSources = super::start(&mut privhelper, init);
    control.set_nonblocking(true)?;
    shipper.set_nonblocking(true)?;

    let max_batch = init.collector.max_batch_records.clamp(1, 4096);
    let max_unacked = init.collector.max_unacked_batches.max(1);
    let mut seq: u64 = 1;
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut pending: Vec<Record> = Vec::new();
    let mut sent_batches: u64 = 0;
    let mut dropped_records: u64 = 0;
    loop {
        let now = Instant::now();
        let timeout = ebpf
            .next_deadline()
            .saturating_duration_since(now)
            .as_millis()
            .min(1000) as i32;
        let mut fds = vec![control.as_raw_fd(), shipper.as_raw_fd()];
        fds.extend(ebpf.fds());
        let _ready = poll_readable(&fds, timeout);

        loop {
            match control.recv::<SupervisorToChild>() {
                Err(e) if e.is_would_block() => break,
                Ok(SupervisorToChild::StatsRequest) => {
                    let mut counters = ebpf.counters();
                    counters.push(("batches_sent".into(), sent_batches));
                    counters.push(("records_dropped".into(), dropped_records));
                    let _ = control.send(&ChildToSupervisor::Stats(RoleStats { counters }));
                }
                Ok(SupervisorToChild::Shutdown) | Err(ProtoError::Closed) => return Ok(()),
                Ok(SupervisorToChild::Init(_)) => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            match shipper.recv::<ShipperToCollector>() {
                Err(e) if e.is_would_block() => break,
                Ok(ShipperToCollector::Ack { seq: s })
                | Ok(ShipperToCollector::Nack { seq: s, .. }) => {
                    unacked.retain(|&u| u != s);
                }
                Ok(ShipperToCollector::Resume { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for e in ebpf.service(Instant::now(), &mut pending, &[]) {
            tracing::warn!("eBPF source: {e}");
        }
        while !pending.is_empty() {
            if unacked.len() >= max_unacked {
                // The shipper is behind: drop the oldest unsent records rather than block.
                let excess = pending.len().saturating_sub(64 * max_batch);
                dropped_records += excess as u64;
                pending.drain(..excess);
                break;
            }
            let n = pending.len().min(max_batch);
            let records: Vec<Record> = pending.drain(..n).collect();
            shipper.send(&CollectorToShipper::Batch(Batch { seq, records }))?;
            unacked.push_back(seq);
            seq += 1;
            sent_batches += 1;
        }
    }
}
