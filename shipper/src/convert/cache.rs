//! The encoded resource of each process, kept between requests.
//!
//! A process's resource (arguments, executable, owner, creation time, container and pod:
//! ≈ 60 % of its bytes) is the same every cycle, so an exporter keeps the bytes it wrote for
//! it, keyed by pid and start time, and writes them again as long as every field they were made
//! from is equal (compared on each use: the ids as they are, the strings by a 64-bit hash keyed
//! at random per cache — SipHash, so no input can be made to collide on purpose; a chance
//! collision between a process's old and new strings, 2^-64 per change, would keep its old
//! resource until the entry expires; any difference: encoded afresh). Kept as a hash, not as a
//! copy, the strings cost 8 bytes instead of their length and ten offsets (≈ 0.3 MB at 2,000
//! processes). The state, which changes often, is not part of the kept bytes: they hold a hole
//! where it goes, filled with one of four prepared encodings. Nor are the attributes every
//! process shares (the defaults: service, host, the configured ones), written last: an
//! encoding that ends in them as the cache wrote them once keeps a mark instead (≈ 75 bytes
//! an entry).
//!
//! Bounded: an entry not used for a while (≈ 3–6 cycles: the sweep's period is three times the
//! process records the cache holds) is dropped, and nothing is added past
//! [`MAX_BYTES`]. Each exporter (OTLP, JSON lines) has its own, for its own format.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use vigil_ipc_proto::ProcessRecord;

use super::{
    Attr, Attrs, BLANK, MAX_PROCESS_ATTRS, Resource, ResourceDefaults, Val, process_resource,
};

/// Most bytes (kept fields, encodings and a fixed overhead per entry) a cache holds.
pub const MAX_BYTES: usize = 8 << 20;

/// What an entry costs besides its bytes: its map slot (key and entry, 64 bytes, with up to as
/// many empty slots as full ones) and the allocation's header.
const ENTRY_OVERHEAD: usize = 144;

/// Set in [`Entry::hole`] when the encoding goes on with [`ResourceCache::tail`] (the
/// encodings are far shorter than 2^31 bytes: [`MAX_BYTES`]).
const SHARED_TAIL: u32 = 1 << 31;

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
    /// Where the state goes in the encoding (relative to its start), and [`SHARED_TAIL`].
    hole: u32,
    /// The process records encoded before this entry was last used.
    seen: u64,
    /// The keyed hash of the strings the resource was made from ([`ResourceCache::hash`]).
    strings: u64,
    /// The encoded resource, without the state.
    data: Box<[u8]>,
}

impl Entry {
    fn same<S: AsRef<str>>(&self, p: &ProcessRecord<S>, strings: u64) -> bool {
        (self.ppid, self.uid, self.gid, self.strings) == (p.ppid, p.uid, p.gid, strings)
    }
}

/// A process's resource as kept: `before`, the state, `after`, the shared `tail`.
#[derive(Debug, Clone, Copy)]
pub struct Cached<'c> {
    pub before: &'c [u8],
    pub state: &'c [u8],
    pub after: &'c [u8],
    pub tail: &'c [u8],
}

impl<'c> Cached<'c> {
    /// `bytes` as they are.
    pub fn whole(bytes: &'c [u8]) -> Self {
        Cached {
            before: bytes,
            state: &[],
            after: &[],
            tail: &[],
        }
    }

    pub fn len(&self) -> usize {
        self.before.len() + self.state.len() + self.after.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.before);
        out.extend_from_slice(self.state);
        out.extend_from_slice(self.after);
        out.extend_from_slice(self.tail);
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
    /// The defaults as the format ends a resource with them (made on the first miss; the
    /// defaults are the same on every call).
    tail: Option<Vec<u8>>,
    /// This cache's random key for the strings' hash.
    keys: RandomState,
    pub stats: CacheStats,
}

/// Append the resource of `p` with the defaults `d` in `format`; returns the state's range.
fn write_process<F: ResourceFormat, S: AsRef<str>>(
    format: &F,
    out: &mut Vec<u8>,
    p: &ProcessRecord<S>,
    d: &ResourceDefaults,
) -> Option<(usize, usize)> {
    let mut created = [0u8; 24];
    let created = super::rfc3339(p.start_time_unix_nano, &mut created);
    let mut attrs = [BLANK; MAX_PROCESS_ATTRS];
    let n = process_resource(p, created, &mut attrs);
    let r = Resource {
        own: Attrs::Fixed(&attrs[..n]),
        defaults: d,
    };
    format.write(out, r)
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
            tail: None,
            keys: RandomState::new(),
            stats: CacheStats::default(),
        }
    }

    /// The strings of `p`, each with its length (so that bytes moved from one field to the
    /// next change the hash), under this cache's key.
    fn hash<S: AsRef<str>>(&self, p: &ProcessRecord<S>) -> u64 {
        let mut h = self.keys.build_hasher();
        for s in strings(p) {
            h.write_usize(s.len());
            h.write(s.as_bytes());
        }
        h.finish()
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

    /// How the format ends a resource with the defaults `d` (empty if it cannot tell).
    fn defaults_tail(&self, d: &ResourceDefaults) -> Vec<u8> {
        let own = [Attr {
            key: STATE_KEY,
            val: Val::Str(STATES[0]),
        }];
        let r = Resource {
            own: Attrs::Fixed(&own),
            defaults: d,
        };
        let mut out = Vec::new();
        match self.format.write(&mut out, r) {
            Some((_, end)) => out.split_off(end),
            None => Vec::new(),
        }
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
        let hash = self.hash(p);
        let hit = self.map.get(&key).is_some_and(|e| e.same(p, hash));
        if !hit {
            self.stats.misses += 1;
            if self.tail.is_none() {
                self.tail = Some(self.defaults_tail(d));
            }
            self.scratch.clear();
            let hole = write_process(&self.format, &mut self.scratch, p, d);
            let hole = match (hole, self.state_bytes(state)) {
                (Some(h), Some(sb)) if self.scratch.get(h.0..h.1) == Some(sb) => h,
                // Not a state we prepare (cannot happen) or not found: as written.
                _ => {
                    self.remove(key);
                    return Cached::whole(&self.scratch);
                }
            };
            let tail = self.tail.as_deref().unwrap_or_default();
            let shared = !tail.is_empty() && self.scratch[hole.1..].ends_with(tail);
            let end = self.scratch.len() - if shared { tail.len() } else { 0 };
            let size = end - (hole.1 - hole.0) + ENTRY_OVERHEAD;
            self.remove(key);
            if self.bytes + size > MAX_BYTES {
                self.stats.full += 1;
                let (h0, h1) = hole;
                return Cached {
                    before: &self.scratch[..h0],
                    state: &self.scratch[h0..h1],
                    after: &self.scratch[h1..],
                    tail: &[],
                };
            }
            // The encoding without the state and the shared tail.
            let mut data = Vec::with_capacity(size - ENTRY_OVERHEAD);
            data.extend_from_slice(&self.scratch[..hole.0]);
            data.extend_from_slice(&self.scratch[hole.1..end]);
            self.bytes += data.len() + ENTRY_OVERHEAD;
            self.map.insert(
                key,
                Entry {
                    ppid: p.ppid,
                    uid: p.uid,
                    gid: p.gid,
                    hole: hole.0 as u32 | if shared { SHARED_TAIL } else { 0 },
                    seen: 0,
                    strings: hash,
                    data: data.into_boxed_slice(),
                },
            );
        } else {
            self.stats.hits += 1;
        }
        let tick = self.tick;
        let states = &self.states;
        let tail = self.tail.as_deref().unwrap_or_default();
        let Some(e) = self.map.get_mut(&key) else {
            return Cached::whole(&[]);
        };
        e.seen = tick;
        let enc = &e.data[..];
        let at = (e.hole & !SHARED_TAIL) as usize;
        let st = STATES.iter().position(|s| *s == state).unwrap_or(1);
        Cached {
            before: &enc[..at],
            state: &states[st],
            after: &enc[at..],
            tail: if e.hole & SHARED_TAIL != 0 { tail } else { &[] },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::pb::Pb;

    /// What the format writes for `p` without a cache.
    fn plain(p: &ProcessRecord<String>, d: &ResourceDefaults) -> Vec<u8> {
        let mut out = Vec::new();
        write_process(&Pb, &mut out, p, d);
        out
    }

    fn written(c: Cached<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        c.write(&mut out);
        assert_eq!(out.len(), c.len());
        out
    }

    /// The defaults every process ends with are kept once, not per entry; a process whose own
    /// attribute replaces one of them (here a configured `container.id`) keeps its own ending.
    #[test]
    fn the_shared_defaults_are_kept_once() {
        let d = ResourceDefaults::with_attributes(
            "host-a",
            &[("container.id".to_string(), "node".to_string())].into(),
        );
        let mut cache = ResourceCache::new(Pb);
        let host = ProcessRecord {
            container_id: String::new(),
            ..crate::convert::tests::process()
        };
        let boxed = ProcessRecord {
            pid: host.pid + 1,
            container_id: "c0ffee".into(),
            ..host.clone()
        };
        for round in 0..2 {
            for (p, shared) in [(&host, true), (&boxed, false)] {
                let c = cache.get(p, &d);
                assert_eq!(written(c), plain(p, &d), "round {round}, shared {shared}");
                assert_eq!(!c.tail.is_empty(), shared, "round {round}");
                if shared {
                    assert!(String::from_utf8_lossy(c.tail).contains("host-a"));
                    assert!(!String::from_utf8_lossy(c.after).contains("host-a"));
                }
            }
        }
        assert_eq!((cache.stats.hits, cache.stats.misses), (2, 2));
        // The shared entry holds its own attributes only.
        let tail = cache.tail.as_deref().unwrap_or_default().len();
        let own = plain(&host, &d).len() - tail - cache.states[1].len();
        let full = plain(&boxed, &d).len() - cache.states[1].len();
        assert_eq!(cache.bytes(), own + full + 2 * ENTRY_OVERHEAD);
    }
}
