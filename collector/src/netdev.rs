//! Host network interface counters from /proc/net/dev.

use std::path::{Path, PathBuf};

use vigil_ipc_proto::{KeyValue, Metric, Record};

use crate::util::{Stamp, i, parse_u64, read_into, sum_i64};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// /proc/net/dev → interfaces; malformed lines are counted.
pub fn parse_net_dev(buf: &[u8]) -> (Vec<IfStats>, u64) {
    let mut v = Vec::new();
    let mut bad = 0;
    for line in buf.split(|&c| c == b'\n').skip(2) {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            bad += 1;
            continue;
        };
        let name = String::from_utf8_lossy(line[..colon].trim_ascii()).into_owned();
        let f: Vec<u64> = line[colon + 1..]
            .split(|&c| c == b' ')
            .filter(|x| !x.is_empty())
            .map_while(parse_u64)
            .collect();
        if f.len() < 16 || name.is_empty() || name.len() > 64 {
            bad += 1;
            continue;
        }
        v.push(IfStats {
            name,
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_dropped: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_dropped: f[11],
        });
    }
    (v, bad)
}

/// Metrics of interfaces (shared by /proc/net/dev and the netlink dumps).
pub fn if_metrics(st: Stamp, s: &IfStats, extra: &[KeyValue], out: &mut Vec<Metric>) {
    // The conventions name the interface `system.device` on system.network.packet.count and
    // `network.interface.name` everywhere else.
    let a = |key: &str, dir: &str| {
        let mut v = vec![
            KeyValue::str(key, s.name.as_str()),
            KeyValue::str("network.io.direction", dir),
        ];
        v.extend_from_slice(extra);
        v
    };
    let ifn = "network.interface.name";
    for (dir, bytes, packets, errors, dropped) in [
        (
            "receive",
            s.rx_bytes,
            s.rx_packets,
            s.rx_errors,
            s.rx_dropped,
        ),
        (
            "transmit",
            s.tx_bytes,
            s.tx_packets,
            s.tx_errors,
            s.tx_dropped,
        ),
    ] {
        out.push(sum_i64(
            "system.network.io",
            "By",
            st,
            i(bytes),
            a(ifn, dir),
        ));
        out.push(sum_i64(
            "system.network.packet.count",
            "{packet}",
            st,
            i(packets),
            a("system.device", dir),
        ));
        out.push(sum_i64(
            "system.network.errors",
            "{error}",
            st,
            i(errors),
            a(ifn, dir),
        ));
        out.push(sum_i64(
            "system.network.packet.dropped",
            "{packet}",
            st,
            i(dropped),
            a(ifn, dir),
        ));
    }
}

/// `container.network.io` of a container's interface: the one network metric the conventions
/// define for containers (the `system.network.*` counters would be indistinguishable from the
/// host's own once a backend drops the resource).
pub fn container_if_metrics(st: Stamp, s: &IfStats, out: &mut Vec<Metric>) {
    for (dir, bytes) in [("receive", s.rx_bytes), ("transmit", s.tx_bytes)] {
        let a = vec![
            KeyValue::str("network.interface.name", s.name.as_str()),
            KeyValue::str("network.io.direction", dir),
        ];
        out.push(sum_i64("container.network.io", "By", st, i(bytes), a));
    }
}

pub struct NetDevCollector {
    path: PathBuf,
    buf: Vec<u8>,
    pub parse_errors: u64,
}

impl NetDevCollector {
    pub fn new(proc_root: &Path) -> Self {
        NetDevCollector {
            path: proc_root.join("net/dev"),
            buf: Vec::new(),
            parse_errors: 0,
        }
    }

    pub fn collect(&mut self, st: Stamp, resource: &[KeyValue], out: &mut Vec<Record>) {
        if read_into(&self.path, &mut self.buf).is_err() {
            self.parse_errors += 1;
            return;
        }
        let (ifs, bad) = parse_net_dev(&self.buf);
        self.parse_errors += bad;
        let mut metrics = Vec::with_capacity(ifs.len() * 8);
        for s in &ifs {
            if_metrics(st, s, &[], &mut metrics);
        }
        out.push(Record::Metrics {
            resource: resource.to_vec(),
            metrics,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile() {
        let (v, bad) = parse_net_dev(
            b"h1\nh2\n  lo: 1 2 3\nxx\n\xff\xff: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
        );
        assert_eq!(bad, 2);
        assert_eq!(v.len(), 1);
    }
}
