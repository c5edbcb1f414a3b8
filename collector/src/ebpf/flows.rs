//! Per-flow aggregation of the packet records, emitted as metrics on eviction.
//!
//! Metrics (cumulative monotonic sums since the flow was first seen, one data point per flow
//! that saw traffic during the eviction interval; a flow idle for a whole interval is forgotten).
//! The conventions define no flow metrics, so they are vigil's own (as Beyla's and OBI's are
//! `beyla.`/`obi.network.flow.bytes`):
//! - `vigil.network.flow.bytes` (`By`): bytes including the link-layer header,
//! - `vigil.network.flow.packets` (`{packet}`): packets (a GSO/GRO super-packet counts once),
//!
//! with attributes `network.transport` (`tcp`, `udp`: the conventions' values; other protocols
//! carry `vigil.network.ip_protocol` instead: `icmp`, `icmpv6`, `sctp` or the number),
//! `network.type` (`ipv4`/`ipv6`), `source.address`, `source.port`, `destination.address`,
//! `destination.port`, `network.interface.name`, `network.io.direction` (`receive`/`transmit`)
//! and `vigil.flow.source` (`socket`/`tc`).

use std::collections::HashMap;
use std::net::IpAddr;

use vigil_ipc_proto::{KeyValue, Metric, MetricKind, MetricValue, Record};

use super::cgroup::CgroupResolver;
use super::records::{Direction, FlowEvent, FlowSource};

/// Most flows tracked at once; packets of new flows beyond it are counted in `overflow`.
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

impl From<&FlowEvent> for FlowKey {
    fn from(e: &FlowEvent) -> Self {
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
    /// cgroup v2 id of the local socket sending this flow (tc egress), first non-zero seen; 0
    /// when unknown (other sources, or only packets without a full socket, e.g. time-wait ACKs).
    pub cgroup_id: u64,
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
    /// Packets not tracked because the table was full.
    pub overflow_packets: u64,
    pub ifnames: IfNames,
    attributor: Option<FlowAttributor>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("overflow_packets", &self.overflow_packets)
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

    /// Account one packet record; `now_unix_nano` dates a new flow.
    pub fn add(&mut self, e: &FlowEvent, now_unix_nano: u64) {
        let key = FlowKey::from(e);
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            self.overflow_packets += 1;
            return;
        }
        let s = self.flows.entry(key).or_insert(FlowStats {
            start_unix_nano: now_unix_nano,
            ..FlowStats::default()
        });
        s.bytes += u64::from(e.bytes);
        s.packets += 1;
        s.recent_packets += 1;
        if s.cgroup_id == 0 {
            s.cgroup_id = e.cgroup_id;
        }
    }

    /// Metrics for every flow that saw traffic since the last call; flows idle for the whole
    /// interval are dropped.
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
        self.flows.retain(|_, s| s.recent_packets > 0);
        let mut out = Vec::with_capacity(self.flows.len());
        let mut keys: Vec<FlowKey> = self.flows.keys().copied().collect();
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

    fn ev(bytes: u32, sport: u16) -> FlowEvent {
        FlowEvent {
            ifindex: 1,
            bytes,
            direction: Direction::Egress,
            proto: 6,
            source: FlowSource::Socket,
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport,
            dport: 80,
            ktime_ns: 0,
            drops: 0,
            cgroup_id: 0,
        }
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
        t.add(&ev(1, 1), 1);
        t.add(&ev(1, 2), 1);
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

    #[test]
    fn aggregates_and_evicts_idle_flows() {
        let mut t = FlowTable::new();
        t.add(&ev(100, 1), 5);
        t.add(&ev(50, 1), 6);
        t.add(&ev(10, 2), 7);
        let recs = t.evict(10, &[]);
        assert_eq!(recs.len(), 2);
        let Record::Metrics { metrics, .. } = &recs[0] else {
            panic!()
        };
        assert_eq!(metrics[0].name, "vigil.network.flow.bytes");
        assert_eq!(metrics[0].value, MetricValue::I64(150));
        assert_eq!(metrics[1].value, MetricValue::I64(2));
        assert_eq!(metrics[0].start_time_unix_nano, 5);
        t.add(&ev(1, 1), 11);
        let recs = t.evict(20, &[]);
        assert_eq!(recs.len(), 1, "flow 2 was idle");
        let recs = t.evict(30, &[]);
        assert!(recs.is_empty());
        assert!(t.is_empty());
    }
}
