//! Block device I/O from /proc/diskstats: `system.disk.io`, `.operations`, `.io_time`,
//! `.operation_time`, `.merged` (the conventions) and `.pending_operations` (the hostmetrics
//! receiver's name; the conventions have none). Devices are filtered as node-exporter does:
//! one regular expression over the device name (`collector.disk_devices_exclude`, default
//! node-exporter's: RAM, loop and floppy devices and partitions out, whole disks, device-mapper
//! and md devices in).

use std::path::{Path, PathBuf};

use regex::Regex;
use vigil_ipc_proto::{KeyValue, Metric, Record};

use crate::util::{Stamp, i, parse_u64, read_into, sum_f64, sum_i64, updown_i64};

/// Sectors in /proc/diskstats are always 512 bytes, whatever the device's block size.
pub const SECTOR: u64 = 512;
/// Devices reported at most.
pub const MAX_DEVICES: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStat {
    pub name: String,
    pub reads: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    pub in_progress: u64,
    pub io_ms: u64,
}

/// One line: `major minor name` and at least 11 counters (14 before 4.18, 18 and 20 later).
pub fn parse_line(line: &[u8]) -> Option<DiskStat> {
    let mut it = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
    let _major = it.next().and_then(parse_u64)?;
    let _minor = it.next().and_then(parse_u64)?;
    let name = it.next()?;
    if name.len() > 64 {
        return None;
    }
    let mut f = [0u64; 11];
    for slot in &mut f {
        *slot = it.next().and_then(parse_u64)?;
    }
    Some(DiskStat {
        name: String::from_utf8_lossy(name).into_owned(),
        reads: f[0],
        reads_merged: f[1],
        sectors_read: f[2],
        read_ms: f[3],
        writes: f[4],
        writes_merged: f[5],
        sectors_written: f[6],
        write_ms: f[7],
        in_progress: f[8],
        io_ms: f[9],
    })
}

/// Every well-formed line and the count of malformed ones.
pub fn parse(buf: &[u8]) -> (Vec<DiskStat>, u64) {
    crate::util::parse_lines(buf, MAX_DEVICES, parse_line)
}

/// The metrics of one device.
pub fn device_metrics(st: Stamp, d: &DiskStat, out: &mut Vec<Metric>) {
    let dev = || KeyValue::str("system.device", d.name.as_str());
    let rw = |dir: &str| vec![dev(), KeyValue::str("disk.io.direction", dir)];
    let s = |ms: u64| ms as f64 / 1000.0;
    for (dir, ops, merged, sectors, ms) in [
        ("read", d.reads, d.reads_merged, d.sectors_read, d.read_ms),
        (
            "write",
            d.writes,
            d.writes_merged,
            d.sectors_written,
            d.write_ms,
        ),
    ] {
        let bytes = i(sectors.saturating_mul(SECTOR));
        out.push(sum_i64("system.disk.io", "By", st, bytes, rw(dir)));
        out.push(sum_i64(
            "system.disk.operations",
            "{operation}",
            st,
            i(ops),
            rw(dir),
        ));
        out.push(sum_f64(
            "system.disk.operation_time",
            "s",
            st,
            s(ms),
            rw(dir),
        ));
        out.push(sum_i64(
            "system.disk.merged",
            "{operation}",
            st,
            i(merged),
            rw(dir),
        ));
    }
    out.push(sum_f64(
        "system.disk.io_time",
        "s",
        st,
        s(d.io_ms),
        vec![dev()],
    ));
    out.push(updown_i64(
        "system.disk.pending_operations",
        "{operations}",
        st,
        i(d.in_progress),
        vec![dev()],
    ));
}

pub struct DiskStatsCollector {
    path: PathBuf,
    exclude: Option<Regex>,
    buf: Vec<u8>,
    pub parse_errors: u64,
}

impl DiskStatsCollector {
    /// `exclude` is `collector.disk_devices_exclude` (validated at start; an empty string or an
    /// invalid expression excludes nothing).
    pub fn new(proc_root: &Path, exclude: &str) -> Self {
        DiskStatsCollector {
            path: proc_root.join("diskstats"),
            exclude: (!exclude.is_empty())
                .then(|| Regex::new(exclude).ok())
                .flatten(),
            buf: Vec::with_capacity(8192),
            parse_errors: 0,
        }
    }

    pub fn excluded(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// Every device not excluded, as one record of the host. The counters count from boot.
    pub fn collect(
        &mut self,
        st: Stamp,
        boot_ns: u64,
        resource: &[KeyValue],
        out: &mut Vec<Record>,
    ) {
        if read_into(&self.path, &mut self.buf).is_err() {
            self.parse_errors += 1;
            return;
        }
        let (devs, bad) = parse(&self.buf);
        self.parse_errors += bad;
        let cst = Stamp {
            start: boot_ns,
            now: st.now,
        };
        let mut metrics = Vec::with_capacity(devs.len() * 10);
        for d in devs.iter().filter(|d| !self.excluded(&d.name)) {
            device_metrics(cst, d, &mut metrics);
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
    fn lines_of_every_kernel_generation() {
        // 4.18+ with discards, 5.5+ with flushes, and the 14-field form.
        let (v, bad) = parse(
            b"   8       0 sda 100 5 2048 30 200 6 4096 40 1 50 70 0 0 0 0 9 9\n 253 0 dm-0 1 2 3 4 5 6 7 8 9 10 11\n   7 0 loop0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0\n garbage\n8 1 \xff 1 2\n",
        );
        assert_eq!(bad, 2);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].name, "sda");
        assert_eq!(
            (v[0].sectors_read, v[0].io_ms, v[0].in_progress),
            (2048, 50, 1)
        );
        let c = DiskStatsCollector::new(Path::new("/proc"), vigil_ipc_proto::DISK_DEVICES_EXCLUDE);
        for (name, out) in [
            ("sda", false),
            ("sda1", true),
            ("nvme0n1", false),
            ("nvme0n1p2", true),
            ("loop0", true),
            ("ram3", true),
            ("zram0", true),
            ("dm-0", false),
            ("md127", false),
            ("vdb", false),
            ("xvda1", true),
        ] {
            assert_eq!(c.excluded(name), out, "{name}");
        }
        let mut m = Vec::new();
        device_metrics(Stamp { start: 0, now: 1 }, &v[0], &mut m);
        assert_eq!(m.len(), 10);
        assert_eq!(m[0].value, vigil_ipc_proto::MetricValue::I64(2048 * 512));
    }
}
