//! The encoded resource of each process, kept between requests.
//!
//! A process's resource (arguments, executable, owner, creation time, container and pod:
//! ≈ 60 % of its bytes) is the same every cycle, so an exporter keeps the bytes it wrote for
//! it, keyed by pid and start time, and writes them again as long as every field they were made
//! from is equal (compared field by field on each use; any difference: encoded afresh). The
//! state, which changes often, is not part of the kept bytes: they hold a hole where it goes,
//! filled with one of four prepared encodings.
//!
//! Bounded: an entry not used for a while (≈ 3–6 cycles: the sweep's period is three times the
//! process records the cache holds) is dropped, and nothing is added past
//! [`MAX_BYTES`]. Each exporter (OTLP, JSON lines) has its own, for its own format.

use std::collections::HashMap;

use vigil_ipc_proto::ProcessRecord;

use super::{Attrs, BLANK, MAX_PROCESS_ATTRS, Resource, ResourceDefaults, process_resource};

/// Most bytes (kept fields, encodings and a fixed overhead per entry) a cache holds.
pub const MAX_BYTES: usize = 8 << 20;

/// What an entry costs besides its bytes (map slot, entry fields, allocation header).
const ENTRY_OVERHEAD: usize = 160;

/// The key of a process's resource.
pub const STATE_KEY: &str = "process.state";

/// The four values [`super::process_state`] gives.
const STATES: [&str; 4] = ["running", "sleeping", "stopped", "defunct"];

/// The string fields of a process record that its resource is made from.
const STRINGS: usize = 10;

fn strings<S: AsRef<str>>(p: &ProcessRecord<S>) -> [&str; STRINGS] {
    [
        p.executable_name.as_ref(),
        p.executable_path.as_ref(),
        p.command_args.as_ref(),
        p.user_name.as_ref(),
        p.group_name.as_ref(),
        p.container_id.as_ref(),
        p.k8s_pod_uid.as_ref(),
        p.k8s_namespace.as_ref(),
        p.k8s_pod_name.as_ref(),
        p.k8s_container_name.as_ref(),
    ]
}

struct Entry {
    ppid: u32,
    uid: u32,
    gid: u32,
    /// The process records encoded before this entry was last used.
    seen: u64,
    /// Where each of the strings ends in `data`.
    ends: [u32; STRINGS],
    /// The strings, one after another, then the encoded resource.
    data: Box<[u8]>,
    /// Where the state goes in the encoding (relative to its start).
    hole: u32,
}

impl Entry {
    fn same<S: AsRef<str>>(&self, p: &ProcessRecord<S>) -> bool {
        if (self.ppid, self.uid, self.gid) != (p.ppid, p.uid, p.gid) {
            return false;
        }
        let mut at = 0;
        for (s, &end) in strings(p).iter().zip(&self.ends) {
            let end = end as usize;
            if self.data.get(at..end) != Some(s.as_bytes()) {
                return false;
            }
            at = end;
        }
        true
    }

    fn encoded(&self) -> &[u8] {
        &self.data[self.ends[STRINGS - 1] as usize..]
    }
}

/// A process's resource as kept: `before`, the state, `after`.
#[derive(Debug, Clone, Copy)]
pub struct Cached<'c> {
    pub before: &'c [u8],
    pub state: &'c [u8],
    pub after: &'c [u8],
}

impl Cached<'_> {
    pub fn len(&self) -> usize {
        self.before.len() + self.state.len() + self.after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.before);
        out.extend_from_slice(self.state);
        out.extend_from_slice(self.after);
    }
}

/// A format's way to write a resource: `write(out, resource)` appends it and returns the range
/// of the `process.state` attribute in what it appended; `state(out, value)` appends that
/// attribute alone, as it appears there.
pub trait ResourceFormat {
    fn write(&self, out: &mut Vec<u8>, r: Resource<'_>) -> Option<(usize, usize)>;
    fn state(&self, out: &mut Vec<u8>, value: &str);
}

/// Counters, for tests and the bench.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped as unused.
    pub expired: u64,
    /// Encodings not kept because the cache was full.
    pub full: u64,
}

pub struct ResourceCache<F> {
    format: F,
    map: HashMap<(u32, u64), Entry>,
    /// The state attribute in each of [`STATES`], encoded.
    states: [Vec<u8>; 4],
    /// Process records looked up so far.
    tick: u64,
    next_sweep: u64,
    bytes: usize,
    /// A miss's encoding, when it is not kept.
    scratch: Vec<u8>,
    pub stats: CacheStats,
}

impl<F: ResourceFormat> ResourceCache<F> {
    pub fn new(format: F) -> Self {
        let states = STATES.map(|s| {
            let mut b = Vec::new();
            format.state(&mut b, s);
            b
        });
        ResourceCache {
            format,
            map: HashMap::new(),
            states,
            tick: 0,
            next_sweep: 0,
            bytes: 0,
            scratch: Vec::new(),
            stats: CacheStats::default(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held (see [`MAX_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn state_bytes(&self, state: &str) -> Option<&[u8]> {
        STATES
            .iter()
            .position(|s| *s == state)
            .map(|i| &self.states[i][..])
    }

    /// The resource of `p` (with the defaults `d`, which must be the same on every call),
    /// from the cache or encoded now.
    pub fn get<S: AsRef<str>>(&mut self, p: &ProcessRecord<S>, d: &ResourceDefaults) -> Cached<'_> {
        self.tick += 1;
        if self.tick >= self.next_sweep {
            self.sweep();
        }
        let state = super::process_state(p.state);
        let key = (p.pid, p.start_time_unix_nano);
        let hit = self.map.get(&key).is_some_and(|e| e.same(p));
        if !hit {
            self.stats.misses += 1;
            let mut created = [0u8; 24];
            let created = super::rfc3339(p.start_time_unix_nano, &mut created);
            let mut attrs = [BLANK; MAX_PROCESS_ATTRS];
            let n = process_resource(p, created, &mut attrs);
            let r = Resource {
                own: Attrs::Fixed(&attrs[..n]),
                defaults: d,
            };
            self.scratch.clear();
            let hole = self.format.write(&mut self.scratch, r);
            let hole = match (hole, self.state_bytes(state)) {
                (Some(h), Some(sb)) if self.scratch.get(h.0..h.1) == Some(sb) => h,
                // Not a state we prepare (cannot happen) or not found: as written.
                _ => {
                    self.remove(key);
                    let len = self.scratch.len();
                    return Cached {
                        before: &self.scratch,
                        state: &[],
                        after: &self.scratch[len..],
                    };
                }
            };
            let strs = strings(p);
            let text: usize = strs.iter().map(|s| s.len()).sum();
            let size = text + self.scratch.len() - (hole.1 - hole.0) + ENTRY_OVERHEAD;
            self.remove(key);
            if self.bytes + size > MAX_BYTES {
                self.stats.full += 1;
                let (h0, h1) = hole;
                return Cached {
                    before: &self.scratch[..h0],
                    state: &self.scratch[h0..h1],
                    after: &self.scratch[h1..],
                };
            }
            // The strings, then the encoding without the state.
            let mut data = Vec::with_capacity(size - ENTRY_OVERHEAD);
            let mut ends = [0u32; STRINGS];
            for (s, end) in strs.iter().zip(&mut ends) {
                data.extend_from_slice(s.as_bytes());
                *end = data.len() as u32;
            }
            data.extend_from_slice(&self.scratch[..hole.0]);
            data.extend_from_slice(&self.scratch[hole.1..]);
            self.bytes += data.len() + ENTRY_OVERHEAD;
            self.map.insert(
                key,
                Entry {
                    ppid: p.ppid,
                    uid: p.uid,
                    gid: p.gid,
                    seen: 0,
                    ends,
                    data: data.into_boxed_slice(),
                    hole: hole.0 as u32,
                },
            );
        } else {
            self.stats.hits += 1;
        }
        let tick = self.tick;
        let states = &self.states;
        let Some(e) = self.map.get_mut(&key) else {
            return Cached {
                before: &[],
                state: &[],
                after: &[],
            };
        };
        e.seen = tick;
        let enc = e.encoded();
        let at = e.hole as usize;
        let st = STATES.iter().position(|s| *s == state).unwrap_or(1);
        Cached {
            before: &enc[..at],
            state: &states[st],
            after: &enc[at..],
        }
    }

    fn remove(&mut self, key: (u32, u64)) {
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= old.data.len() + ENTRY_OVERHEAD;
        }
    }

    /// Drop the entries not used in the last period, and set the next sweep one period ahead
    /// (three times the entries held, at least 1024 records).
    fn sweep(&mut self) {
        let period = (3 * self.map.len() as u64).max(1024);
        let since = self.tick.saturating_sub(period);
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|_, e| {
            let keep = e.seen >= since;
            if !keep {
                freed += e.data.len() + ENTRY_OVERHEAD;
            }
            keep
        });
        self.bytes -= freed;
        self.stats.expired += (before - self.map.len()) as u64;
        if self.map.capacity() > 2 * self.map.len().max(256) {
            self.map.shrink_to_fit();
        }
        self.next_sweep = self.tick + period;
    }
}
