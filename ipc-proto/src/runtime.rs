//! The one loop every child role runs: poll the supervisor's control channel and the role's
//! own descriptors, answer the supervisor (stats, shutdown) the same way in every role, and
//! hand the rest to the role. A role plugs in as a [`Worker`]: what is due by a time, which
//! descriptors to watch, what to do when they are ready, its counters, how it shuts down.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::{Channel, ChildToSupervisor, ProtoError, RoleStats, SupervisorToChild};

/// The longest the loop sleeps without a deadline (a role with nothing due still turns).
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What a worker says after handling its descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The worker is done (its phase is over); the loop returns [`Exit::Done`].
    Done,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The supervisor said `Shutdown`; the worker's `shutdown` ran.
    Shutdown,
    /// The supervisor's end of the control channel is gone (closed or failing); the worker's
    /// `shutdown` ran. Nobody is left to restart or stop the role.
    Orphaned,
    /// The worker said [`Flow::Done`].
    Done,
}

/// A role's part of the loop.
pub trait Worker {
    type Error: From<ProtoError>;

    /// Do what is due at `now` (timers, flushing); when the loop must come back at the
    /// latest (`None`: when a descriptor is ready, or after [`MAX_SLEEP`]).
    fn due(&mut self, now: Instant) -> Result<Option<Instant>, Self::Error>;

    /// The descriptors to watch this turn, with the events wanted, appended to `out`.
    fn watch(&self, out: &mut Vec<(RawFd, PollFlags)>);

    /// After the poll: the events of the descriptors [`Worker::watch`] listed, in order
    /// (empty where nothing happened).
    fn ready(&mut self, events: &[PollFlags]) -> Result<Flow, Self::Error>;

    /// The counters the supervisor asked for.
    fn stats(&mut self) -> RoleStats;

    /// The supervisor said `Shutdown` or went away: flush what can be, then the loop returns.
    fn shutdown(&mut self) {}

    /// A control frame a running role does not take (a second `Init`, a malformed frame).
    fn bad_control(&mut self, _what: &str) {}

    /// Warnings for the supervisor (it logs them and shows them in `vigil status`), taken
    /// after every [`Worker::due`] and [`Worker::ready`].
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Run `worker` until the supervisor says `Shutdown`, its channel closes, or the worker is
/// done. The control channel is made non-blocking.
pub fn run<W: Worker>(control: &mut Channel, worker: &mut W) -> Result<Exit, W::Error> {
    control.set_nonblocking(true).map_err(ProtoError::Io)?;
    let mut watch = Vec::new();
    loop {
        let now = Instant::now();
        let deadline = worker.due(now)?;
        send_warnings(control, worker);
        watch.clear();
        worker.watch(&mut watch);
        let events = match poll(control, &watch, deadline)? {
            Some(e) => e,
            None => continue,
        };
        if let Some(exit) = serve_control(control, worker, events[0]) {
            return Ok(exit);
        }
        let flow = worker.ready(&events[1..])?;
        send_warnings(control, worker);
        if flow == Flow::Done {
            return Ok(Exit::Done);
        }
    }
}

fn send_warnings<W: Worker>(control: &Channel, worker: &mut W) {
    for w in worker.take_warnings() {
        let _ = control.send(&ChildToSupervisor::Warning(w));
    }
}

/// One poll of the control channel and the watched descriptors until `deadline`; `None` when
/// interrupted by a signal.
fn poll(
    control: &Channel,
    watch: &[(RawFd, PollFlags)],
    deadline: Option<Instant>,
) -> Result<Option<Vec<PollFlags>>, ProtoError> {
    let wait = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(MAX_SLEEP)
        .min(MAX_SLEEP);
    // Rounded up: waking a millisecond early would spin until the deadline.
    let ms = wait.as_millis() as i32 + i32::from(!wait.subsec_nanos().is_multiple_of(1_000_000));
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    // SAFETY: the worker owns every descriptor it lists and keeps it open across this call
    // (`watch` borrows the worker for the whole poll); `control` outlives it too.
    let b = |fd: RawFd| unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = Vec::with_capacity(watch.len() + 1);
    fds.push(PollFd::new(b(control.as_raw_fd()), PollFlags::POLLIN));
    for (fd, flags) in watch {
        fds.push(PollFd::new(b(*fd), *flags));
    }
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(None),
        Err(e) => return Err(ProtoError::Io(e.into())),
    }
    Ok(Some(
        fds.iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect(),
    ))
}

/// Answer every waiting control frame; `Some` when the loop must end.
fn serve_control<W: Worker>(
    control: &mut Channel,
    worker: &mut W,
    events: PollFlags,
) -> Option<Exit> {
    if events.is_empty() {
        return None;
    }
    loop {
        match control.recv::<SupervisorToChild>() {
            Err(e) if e.is_would_block() => return None,
            Ok(SupervisorToChild::StatsRequest) => {
                let _ = control.send(&ChildToSupervisor::Stats(worker.stats()));
            }
            Ok(SupervisorToChild::Shutdown) => {
                worker.shutdown();
                return Some(Exit::Shutdown);
            }
            Err(ProtoError::Closed | ProtoError::Io(_)) => {
                worker.shutdown();
                return Some(Exit::Orphaned);
            }
            Ok(SupervisorToChild::Init(_)) => worker.bad_control("a second Init"),
            Err(e) => worker.bad_control(&e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker with one timer and one watched channel end; it records what the loop did.
    struct Probe {
        peer: Channel,
        next: Instant,
        ticks: u32,
        received: Vec<String>,
        stats_asked: u32,
        bad: Vec<String>,
        shut: bool,
        done_after: Option<usize>,
    }

    impl Worker for Probe {
        type Error = ProtoError;
        fn due(&mut self, now: Instant) -> Result<Option<Instant>, ProtoError> {
            if now >= self.next {
                self.ticks += 1;
                self.next = now + Duration::from_millis(20);
            }
            Ok(Some(self.next))
        }
        fn watch(&self, out: &mut Vec<(RawFd, PollFlags)>) {
            out.push((self.peer.as_raw_fd(), PollFlags::POLLIN));
        }
        fn ready(&mut self, events: &[PollFlags]) -> Result<Flow, ProtoError> {
            assert_eq!(events.len(), 1);
            if events[0].contains(PollFlags::POLLIN) {
                loop {
                    match self.peer.recv::<String>() {
                        Ok(s) => self.received.push(s),
                        Err(e) if e.is_would_block() => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(match self.done_after {
                Some(n) if self.received.len() >= n => Flow::Done,
                _ => Flow::Continue,
            })
        }
        fn stats(&mut self) -> RoleStats {
            self.stats_asked += 1;
            RoleStats {
                counters: vec![("ticks".into(), u64::from(self.ticks))],
            }
        }
        fn shutdown(&mut self) {
            self.shut = true;
        }
        fn bad_control(&mut self, what: &str) {
            self.bad.push(what.into());
        }
    }

    fn probe(done_after: Option<usize>) -> (Probe, Channel) {
        let (peer, other) = Channel::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let p = Probe {
            peer,
            next: Instant::now(),
            ticks: 0,
            received: Vec::new(),
            stats_asked: 0,
            bad: Vec::new(),
            shut: false,
            done_after,
        };
        (p, other)
    }

    #[test]
    fn answers_stats_ignores_junk_and_stops_on_shutdown() {
        let (mut child, mut sup) = Channel::pair().unwrap();
        let (mut w, peer) = probe(None);
        peer.send(&"hello".to_string()).unwrap();
        sup.send(&SupervisorToChild::StatsRequest).unwrap();
        sup.send_raw(&[1, 2, 3]).unwrap();
        let t = std::thread::spawn(move || {
            let stats = match sup.recv::<ChildToSupervisor>().unwrap() {
                ChildToSupervisor::Stats(s) => s,
                other => panic!("{other:?}"),
            };
            // Let the timer run a few turns, then stop the loop.
            std::thread::sleep(Duration::from_millis(100));
            sup.send(&SupervisorToChild::Shutdown).unwrap();
            stats
        });
        assert_eq!(run(&mut child, &mut w).unwrap(), Exit::Shutdown);
        let stats = t.join().unwrap();
        assert_eq!(stats.counters[0].0, "ticks");
        assert_eq!(w.received, ["hello"]);
        assert_eq!(w.stats_asked, 1);
        assert_eq!(w.bad.len(), 1, "{:?}", w.bad);
        assert!(w.shut);
        assert!(w.ticks >= 3, "the timer kept turning: {}", w.ticks);
    }

    #[test]
    fn a_closed_control_channel_is_a_shutdown_and_a_done_worker_returns() {
        let (mut child, sup) = Channel::pair().unwrap();
        let (mut w, _peer) = probe(None);
        drop(sup);
        assert_eq!(run(&mut child, &mut w).unwrap(), Exit::Orphaned);
        assert!(w.shut);

        let (mut child, _sup) = Channel::pair().unwrap();
        let (mut w, peer) = probe(Some(2));
        peer.send(&"a".to_string()).unwrap();
        peer.send(&"b".to_string()).unwrap();
        assert_eq!(run(&mut child, &mut w).unwrap(), Exit::Done);
        assert!(!w.shut);
    }

    #[test]
    fn a_worker_error_ends_the_loop() {
        let (mut child, _sup) = Channel::pair().unwrap();
        let (mut w, peer) = probe(None);
        peer.send_raw(&[9, 9, 9]).unwrap();
        assert!(run(&mut child, &mut w).is_err());
    }

    /// A worker whose warnings the loop sends to the supervisor, then stops (done).
    struct Warns(u32);

    impl Worker for Warns {
        type Error = ProtoError;
        fn due(&mut self, _now: Instant) -> Result<Option<Instant>, ProtoError> {
            Ok(Some(Instant::now()))
        }
        fn watch(&self, _out: &mut Vec<(RawFd, PollFlags)>) {}
        fn ready(&mut self, _events: &[PollFlags]) -> Result<Flow, ProtoError> {
            self.0 += 1;
            Ok(if self.0 == 2 {
                Flow::Done
            } else {
                Flow::Continue
            })
        }
        fn stats(&mut self) -> RoleStats {
            RoleStats::default()
        }
        fn take_warnings(&mut self) -> Vec<String> {
            vec![format!("turn {}", self.0)]
        }
    }

    #[test]
    fn warnings_reach_the_supervisor_in_order() {
        let (mut child, mut sup) = Channel::pair().unwrap();
        assert_eq!(run(&mut child, &mut Warns(0)).unwrap(), Exit::Done);
        let got: Vec<String> = (0..4)
            .map(|_| match sup.recv::<ChildToSupervisor>().unwrap() {
                ChildToSupervisor::Warning(w) => w,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["turn 0", "turn 1", "turn 1", "turn 2"]);
    }
}
