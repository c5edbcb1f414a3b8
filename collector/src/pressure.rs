//! Pressure stall information: the host's /proc/pressure/{cpu,memory,io,irq} and a cgroup v2
//! directory's `{cpu,memory,io,irq}.pressure`. Named as the hostmetrics receiver's pressure
//! scraper names them — `system.<resource>.linux.pressure.total` (`s`, cumulative, attribute
//! `system.pressure.stall_type` = `some` | `full`) — and, for a container, the same with
//! `container.` for `system.` (the host's series would otherwise be indistinguishable from a
//! container's once a backend drops the resource). The totals are the kernel's microseconds as
//! seconds (a double: the scraper's integer would round every stall under a second away).

use vigil_ipc_proto::{KeyValue, Metric};

use crate::util::{Stamp, parse_u64, sum_f64};

/// The resources, in file-name order.
pub const RESOURCES: [&str; 4] = ["cpu", "memory", "io", "irq"];

/// `total=` of the `some` and `full` lines, in microseconds (`full` is absent for the host's
/// cpu before Linux 5.13 and always for irq's `some`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: Option<u64>,
    pub full_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed pressure file")]
pub struct Malformed;

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` lines.
pub fn parse(buf: &[u8]) -> Result<Pressure, Malformed> {
    let mut p = Pressure::default();
    for line in buf.split(|&c| c == b'\n') {
        let mut f = line.split(|&c| c == b' ').filter(|x| !x.is_empty());
        let slot = match f.next() {
            Some(b"some") => &mut p.some_us,
            Some(b"full") => &mut p.full_us,
            Some(_) => return Err(Malformed),
            None => continue,
        };
        let total = f
            .find_map(|kv| kv.strip_prefix(b"total="))
            .ok_or(Malformed)?;
        *slot = Some(parse_u64(total).ok_or(Malformed)?);
    }
    if p.some_us.is_none() && p.full_us.is_none() {
        return Err(Malformed);
    }
    Ok(p)
}

/// The metrics of one resource's file; `scope` is `system` or `container`.
pub fn metrics(st: Stamp, scope: &str, resource: &str, p: Pressure, out: &mut Vec<Metric>) {
    let name = format!("{scope}.{resource}.linux.pressure.total");
    for (stall, v) in [("some", p.some_us), ("full", p.full_us)] {
        if let Some(us) = v {
            let a = vec![KeyValue::str("system.pressure.stall_type", stall)];
            out.push(sum_f64(&name, "s", st, us as f64 / 1e6, a));
        }
    }
}

/// Read and emit every pressure file of `dir` (`/proc/pressure` with names `cpu`, ..., or a
/// cgroup directory with `cpu.pressure`, ...). Missing files are skipped (irq needs
/// CONFIG_IRQ_TIME_ACCOUNTING, a cgroup may lack a controller); returns malformed ones.
pub fn collect_dir(
    dir: &std::path::Path,
    suffix: &str,
    scope: &str,
    st: Stamp,
    buf: &mut Vec<u8>,
    out: &mut Vec<Metric>,
) -> u64 {
    let mut bad = 0;
    for r in RESOURCES {
        if crate::util::read_into(&dir.join(format!("{r}{suffix}")), buf).is_err() {
            continue;
        }
        match parse(buf) {
            Ok(p) => metrics(st, scope, r, p, out),
            Err(Malformed) => bad += 1,
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files() {
        let p = parse(
            b"some avg10=7.49 avg60=1.73 avg300=2.50 total=29531733\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!((p.some_us, p.full_us), (Some(29_531_733), Some(0)));
        assert_eq!(
            parse(b"full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap(),
            Pressure {
                some_us: None,
                full_us: Some(5)
            }
        );
        for bad in [
            &b""[..],
            b"some avg10=1",
            b"some total=x",
            b"weird total=1",
            b"\xff",
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{bad:?}");
        }
        let mut m = Vec::new();
        metrics(Stamp { start: 0, now: 1 }, "container", "memory", p, &mut m);
        assert_eq!(m[0].name, "container.memory.linux.pressure.total");
        assert_eq!(m[0].value, vigil_ipc_proto::MetricValue::F64(29.531733));
        assert_eq!(m.len(), 2);
    }
}
