//! The kernel's per-flow counters (read from the flow programs' table, `flowmap.rs`) turned
//! into per-interval deltas, kept as cumulative sums, and emitted as metrics on eviction.
//!
//! The kernel's counters only grow while its entry lives; the collector keeps the last value it
//! read of each entry and adds the difference (a re-created entry, told by its first-packet
//! time, counts from zero). Packets the kernel counted in its totals but that reach no flow
//! here — the entry was evicted to make room before its last counts were read, or found no room
//! at all — are counted as lost ([`FlowTable::lost_packets`]), as are the evicted entries.
//!
//! Metrics (cumulative monotonic sums since the flow was first seen, one data point per flow
//! that saw traffic during the eviction interval; a flow idle for a whole interval and gone from
//! the kernel's table is forgotten).
//! The conventions define no flow metrics, so they are vigil's own (as Beyla's and OBI's are
//! `beyla.`/`obi.network.flow.bytes`):
//! - `vigil.network.flow.bytes` (`By`): bytes including the link-layer header,
//! - `vigil.network.flow.packets` (`{packet}`): packets (a GSO/GRO super-packet counts once),
//!
//! with attributes `network.transport` (`tcp`, `udp`: the conventions' values; other protocols
//! carry `vigil.network.ip_protocol` instead: `icmp`, `icmpv6`, `sctp` or the number),
//! `network.type` (`ipv4`/`ipv6`), `source.address`, `source.port`, `destination.address`,
//! `destination.port`, `network.interface.name`, `network.io.direction` (`receive`/`transmit`)
//! and `vigil.flow.source` (`tracepoint`/`socket`/`tc`).

use std::collections::HashMap;
use std::net::IpAddr;

use vigil_ipc_proto::{KeyValue, Metric, MetricKind, MetricValue, Record};

use super::Clock;
use super::cgroup::CgroupResolver;
use super::flowmap::{KernelFlow, Totals};
use super::records::{Direction, FlowSource};

/// Most flows tracked at once (the kernel's table holds 16,384; the rest is room for entries
/// it evicted that still have counts to report); packets of new flows beyond it are lost.
pub const MAX_FLOWS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub ifindex: u32,
    pub direction: Direction,
    pub proto: u8,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub source: FlowSource,
}

impl From<&KernelFlow> for FlowKey {
    fn from(e: &KernelFlow) -> Self {
        FlowKey {
            ifindex: e.ifindex,
            direction: e.direction,
            proto: e.proto,
            saddr: e.saddr,
            daddr: e.daddr,
            sport: e.sport,
            dport: e.dport,
            source: e.source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub bytes: u64,
    pub packets: u64,
    /// Wall clock of the first packet seen.
    pub start_unix_nano: u64,
    /// Packets seen since the last eviction.
    pub recent_packets: u64,
    /// cgroup v2 id of the local socket sending this flow (tc egress, the transmit tracepoint),
    /// first non-zero seen; 0 when unknown (the socket filter, received packets, or only
    /// packets without a full socket, e.g. time-wait ACKs).
    pub cgroup_id: u64,
    /// The kernel entry's counters and first-packet time when last read.
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    pub kernel_first_ns: u64,
    /// Present in the kernel's table at the last read.
    pub in_kernel: bool,
}

/// Interface index → name, read from /sys/class/net (cached; refreshed on a miss at most once
/// per eviction).
#[derive(Debug, Default)]
pub struct IfNames {
    names: HashMap<u32, String>,
    refreshed: bool,
}

impl IfNames {
    fn refresh(&mut self) {
        self.names.clear();
        if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
            for e in dir.flatten().take(4096) {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if let Ok(s) = std::fs::read_to_string(e.path().join("ifindex"))
                    && let Ok(i) = s.trim().parse::<u32>()
                {
                    self.names.insert(i, name);
                }
            }
        }
        self.refreshed = true;
    }

    pub fn name(&mut self, ifindex: u32) -> Option<String> {
        if !self.names.contains_key(&ifindex) && !self.refreshed {
            self.refresh();
        }
        self.names.get(&ifindex).cloned()
    }

    /// Allow one refresh again (called once per eviction).
    pub fn allow_refresh(&mut self) {
        self.refreshed = false;
    }
}

/// Extra attributes for a flow at eviction: container / pod attribution by whoever knows the
/// network namespaces (e.g. `container.id`, `k8s.pod.uid` from the flow's interface or address).
pub type FlowAttributor =
    Box<dyn FnMut(&FlowKey, &FlowStats, Option<&str>) -> Vec<KeyValue> + Send>;

#[derive(Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowStats>,
    /// Packets counted into flows here since the programs were loaded.
    attributed_packets: u64,
    attributed_bytes: u64,
    /// Packets (bytes) the kernel counted that no flow here has: evicted from the kernel's
    /// table before their last counts were read, no room there, or no room here.
    pub lost_packets: u64,
    pub lost_bytes: u64,
    /// Flows the kernel's table evicted to make room.
    pub evicted_flows: u64,
    /// Packets of new flows not tracked because this table was full (part of `lost_packets`).
    pub overflow_packets: u64,
    /// The kernel's totals at the last read.
    pub totals: Totals,
    pub ifnames: IfNames,
    attributor: Option<FlowAttributor>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("lost_packets", &self.lost_packets)
            .finish()
    }
}

pub fn transport_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

impl FlowTable {
    pub fn new() -> Self {
        FlowTable::default()
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&FlowStats> {
        self.flows.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowStats)> {
        self.flows.iter()
    }

    /// Called at eviction with each flow's key and interface name; its attributes are added to
    /// the flow's metrics.
    pub fn set_attributor(&mut self, f: FlowAttributor) {
        self.attributor = Some(f);
    }

    /// A read of the kernel's table starts: entries not applied before [`end_read`] are gone
    /// from it.
    ///
    /// [`end_read`]: Self::end_read
    pub fn begin_read(&mut self) {
        for s in self.flows.values_mut() {
            s.in_kernel = false;
        }
    }

    /// One entry of the kernel's table: what it counted since it was last read here.
    pub fn apply(&mut self, e: &KernelFlow, clock: &Clock) {
        let key = FlowKey::from(e);
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            self.overflow_packets = self.overflow_packets.saturating_add(e.packets);
            return;
        }
        let s = self.flows.entry(key).or_insert(FlowStats {
            start_unix_nano: clock.unix_nano(e.first_ns),
            ..FlowStats::default()
        });
        let (dp, db) = if s.kernel_first_ns == e.first_ns {
            (
                e.packets.saturating_sub(s.kernel_packets),
                e.bytes.saturating_sub(s.kernel_bytes),
            )
        } else {
            // New here, or a new entry of a flow the kernel evicted: all of it is new.
            s.kernel_first_ns = e.first_ns;
            s.kernel_packets = 0;
            s.kernel_bytes = 0;
            (e.packets, e.bytes)
        };
        // (The same entry twice in one walk — the table changed under it — adds only what it
        // counted in between.)
        s.kernel_packets = s.kernel_packets.max(e.packets);
        s.kernel_bytes = s.kernel_bytes.max(e.bytes);
        s.in_kernel = true;
        s.packets += dp;
        s.bytes += db;
        s.recent_packets += dp;
        if s.cgroup_id == 0 {
            s.cgroup_id = e.cgroup_id;
        }
        self.attributed_packets += dp;
        self.attributed_bytes += db;
    }

    /// The read is over: `totals` (taken before the walk) tell what the kernel counted and
    /// `present` how many entries the walk saw; what no flow got is lost.
    pub fn end_read(&mut self, totals: Totals, present: usize) {
        self.totals = totals;
        self.lost_packets = self
            .lost_packets
            .max(totals.packets.saturating_sub(self.attributed_packets));
        self.lost_bytes = self
            .lost_bytes
            .max(totals.bytes.saturating_sub(self.attributed_bytes));
        self.evicted_flows = self
            .evicted_flows
            .max(totals.created.saturating_sub(present as u64));
    }

    /// Metrics for every flow that saw traffic since the last call; flows idle for the whole
    /// interval and gone from the kernel's table are dropped.
    pub fn evict(&mut self, now_unix_nano: u64, resource: &[KeyValue]) -> Vec<Record> {
        self.evict_with(now_unix_nano, resource, None)
    }

    /// [`evict`](Self::evict), attributing flows with a known sending cgroup (tc egress) to
    /// their container / pod.
    pub fn evict_with(
        &mut self,
        now_unix_nano: u64,
        resource: &[KeyValue],
        mut cgroups: Option<&mut CgroupResolver>,
    ) -> Vec<Record> {
        self.ifnames.allow_refresh();
        self.flows
            .retain(|_, s| s.recent_packets > 0 || s.in_kernel);
        let mut keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, s)| s.recent_packets > 0)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        keys.sort();
        for k in keys {
            let Some(s) = self.flows.get_mut(&k) else {
                continue;
            };
            s.recent_packets = 0;
            let s = *s;
            let mut attrs = vec![
                match k.proto {
                    6 | 17 => KeyValue::str("network.transport", transport_name(k.proto)),
                    p => KeyValue::str("vigil.network.ip_protocol", transport_name(p)),
                },
                KeyValue::str(
                    "network.type",
                    if k.saddr.is_ipv4() { "ipv4" } else { "ipv6" },
                ),
                KeyValue::str("source.address", k.saddr.to_string()),
                KeyValue::i64("source.port", i64::from(k.sport)),
                KeyValue::str("destination.address", k.daddr.to_string()),
                KeyValue::i64("destination.port", i64::from(k.dport)),
                KeyValue::str("network.io.direction", k.direction.as_otel()),
                KeyValue::str(
                    "vigil.flow.source",
                    match k.source {
                        FlowSource::Socket => "socket",
                        FlowSource::Tc => "tc",
                        FlowSource::Tracepoint => "tracepoint",
                        FlowSource::Unknown => "unknown",
                    },
                ),
            ];
            if let Some(r) = cgroups.as_deref_mut() {
                attrs.extend(r.attributes(s.cgroup_id));
            }
            let ifname = self.ifnames.name(k.ifindex);
            if let Some(f) = self.attributor.as_mut() {
                attrs.extend(f(&k, &s, ifname.as_deref()));
            }
            match ifname {
                Some(n) => attrs.push(KeyValue::str("network.interface.name", n)),
                None => attrs.push(KeyValue::i64(
                    "vigil.network.interface.index",
                    i64::from(k.ifindex),
                )),
            }
            let metric = |name: &str, unit: &str, v: u64| Metric {
                name: name.into(),
                unit: unit.into(),
                kind: MetricKind::Sum { monotonic: true },
                start_time_unix_nano: s.start_unix_nano,
                time_unix_nano: now_unix_nano,
                value: MetricValue::I64(i64::try_from(v).unwrap_or(i64::MAX)),
                attributes: attrs.clone(),
            };
            out.push(Record::Metrics {
                resource: resource.to_vec(),
                metrics: vec![
                    metric("vigil.network.flow.bytes", "By", s.bytes),
                    metric("vigil.network.flow.packets", "{packet}", s.packets),
                ],
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ev(packets: u64, bytes: u64, sport: u16, first_ns: u64) -> KernelFlow {
        KernelFlow {
            ifindex: 1,
            direction: Direction::Egress,
            proto: 6,
            source: FlowSource::Socket,
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport,
            dport: 80,
            packets,
            bytes,
            first_ns,
            cgroup_id: 0,
        }
    }

    /// One read of the kernel's table holding `entries`, with these totals.
    fn read(t: &mut FlowTable, entries: &[KernelFlow], totals: Totals) {
        let clock = Clock::now();
        t.begin_read();
        for e in entries {
            t.apply(e, &clock);
        }
        t.end_read(totals, entries.len());
    }

    fn totals(packets: u64, bytes: u64, created: u64) -> Totals {
        Totals {
            packets,
            bytes,
            not_stored: 0,
            created,
        }
    }

    fn values(recs: &[Record]) -> Vec<(i64, i64)> {
        recs.iter()
            .map(|r| match r {
                Record::Metrics { metrics, .. } => match (&metrics[0].value, &metrics[1].value) {
                    (MetricValue::I64(b), MetricValue::I64(p)) => (*b, *p),
                    _ => panic!("not i64"),
                },
                _ => panic!("not metrics"),
            })
            .collect()
    }

    #[test]
    fn deltas_of_the_kernel_counters_accumulate() {
        let mut t = FlowTable::new();
        read(
            &mut t,
            &[ev(2, 150, 1, 5), ev(1, 10, 2, 7)],
            totals(3, 160, 2),
        );
        let recs = t.evict(10, &[]);
        let Record::Metrics { metrics, .. } = &recs[0] else {
            panic!()
        };
        assert_eq!(metrics[0].name, "vigil.network.flow.bytes");
        assert_eq!(metrics[1].name, "vigil.network.flow.packets");
        assert_eq!(values(&recs), vec![(150, 2), (10, 1)]);
        // Flow 1 grows, flow 2 is idle (still in the kernel): only flow 1 is reported.
        read(
            &mut t,
            &[ev(3, 151, 1, 5), ev(1, 10, 2, 7)],
            totals(4, 161, 2),
        );
        let recs = t.evict(20, &[]);
        assert_eq!(values(&recs), vec![(151, 3)]);
        // Flow 2 is still known: when it moves again its delta is right, not its whole count.
        read(
            &mut t,
            &[ev(3, 151, 1, 5), ev(2, 20, 2, 7)],
            totals(5, 171, 2),
        );
        assert_eq!(values(&t.evict(30, &[])), vec![(20, 2)]);
        assert_eq!((t.lost_packets, t.evicted_flows), (0, 0));
        // Read twice in one walk: counted once, with what came in between.
        let clock = Clock::now();
        t.begin_read();
        t.apply(&ev(4, 200, 1, 5), &clock);
        t.apply(&ev(4, 200, 1, 5), &clock);
        t.apply(&ev(5, 210, 1, 5), &clock);
        t.end_read(totals(7, 230, 2), 2);
        assert_eq!(values(&t.evict(40, &[])), vec![(210, 5)]);
    }

    #[test]
    fn evicted_entries_are_counted_and_their_unread_packets_lost() {
        let mut t = FlowTable::new();
        read(&mut t, &[ev(2, 200, 1, 5)], totals(2, 200, 1));
        t.evict(10, &[]);
        // The kernel evicted flow 1 after one more packet (never read), made flow 2, then
        // re-created flow 1 (a new first-packet time) with 1 packet.
        read(
            &mut t,
            &[ev(1, 100, 1, 9), ev(5, 500, 2, 8)],
            totals(2 + 1 + 5 + 1, 200 + 100 + 500 + 100, 3),
        );
        assert_eq!(values(&t.evict(20, &[])), vec![(300, 3), (500, 5)]);
        assert_eq!(t.lost_packets, 1);
        assert_eq!(t.lost_bytes, 100);
        assert_eq!(t.evicted_flows, 1);
        // Gone from the kernel and idle: forgotten.
        read(&mut t, &[ev(5, 500, 2, 8)], totals(9, 900, 3));
        assert!(t.evict(30, &[]).is_empty());
        assert_eq!(t.len(), 1);
        assert_eq!(t.evicted_flows, 2);
    }

    #[test]
    fn attributor_adds_attributes() {
        let mut t = FlowTable::new();
        t.set_attributor(Box::new(|k, _s, _if| {
            if k.sport == 1 {
                vec![KeyValue::str("container.id", "abc")]
            } else {
                Vec::new()
            }
        }));
        read(&mut t, &[ev(1, 1, 1, 1), ev(1, 1, 2, 1)], totals(2, 2, 2));
        let recs = t.evict(2, &[]);
        let with: Vec<bool> = recs
            .iter()
            .map(|r| match r {
                Record::Metrics { metrics, .. } => metrics[0]
                    .attributes
                    .iter()
                    .any(|kv| kv.key == "container.id"),
                _ => false,
            })
            .collect();
        assert_eq!(with, vec![true, false]);
    }
}
