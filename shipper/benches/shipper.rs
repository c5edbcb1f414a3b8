//! Shipper benchmark (run: `cargo bench -p vigil-shipper --bench shipper`; `cargo test
//! --benches` runs a short smoke of every part).
//!
//! 1. Encode: the same process records as OTLP protobuf, built with opentelemetry-proto's
//!    prost types (the well-kept crate: one owned message tree per request) and written by
//!    `convert::pb` straight from the view: ns per record, and the ratio.
//! 2. Throughput: a collector stand-in pushes batches of 256 process records plus one kernel
//!    event (the collector's batch size, a 64-batch unacknowledged window), each batch encoded
//!    once as the collector encodes it, into run(); the journal is on ext4 under /var/tmp with
//!    fsync policy `batch` (no Ack before an fdatasync covers the batch; group commit); the
//!    exporter ships OTLP/HTTP gzip protobuf to a loopback receiver that gunzips every body
//!    and counts its items by walking the protobuf fields (a full decode of each body, on the
//!    same two cores, would measure the receiver: it is done for the first body of each
//!    signal, to check the count). Reported: records/s journaled and acknowledged, records/s
//!    (and data points/s) received, and the CPU the shipper's own thread spent per record.
//!    The same over HTTPS (rustls, TLS 1.3): the receiver behind stunnel4 on the same
//!    machine, with certificates openssl makes for the run; printed beside plain HTTP, with
//!    the ratio (stunnel's decryption shares the two cores with the shipper).
//! 3. The journal alone, and the disk's raw ceiling for the same bytes.
//! 4. Latency collector → receiver: one kernel event per batch every 2 ms, default batch
//!    delay (events are not held back by it); p50/p99 of (decoded at the receiver) − (sent by
//!    the collector).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pcommon;
use opentelemetry_proto::tonic::metrics::v1 as pmetrics;
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use prost::Message;
use vigil_ipc_proto::batch::BatchFrame;
use vigil_ipc_proto::*;
use vigil_shipper::convert::{self, Attr, ResourceDefaults, Val, View};

const PER_BATCH: usize = 256;

/// Processes on the bench's machine: record `i` is of process `i % PROCESSES`, so the
/// throughput part sees each process again every `PROCESSES` records, as an agent does every
/// cycle (the harness's load: 4,080 processes).
const PROCESSES: u64 = 4096;

fn process(i: u64) -> ProcessRecord {
    let id = i % PROCESSES;
    ProcessRecord {
        time_unix_nano: 1_700_000_010_000_000_000 + (i / PROCESSES) * 1_000_000_000,
        start_time_unix_nano: 1_700_000_000_000_000_000 + id * 1_000_000,
        pid: 4000 + id as u32,
        ppid: 1234,
        uid: 0,
        gid: 0,
        state: b'S',
        threads: 1,
        cpu_user_ns: 1_250_000_000 + i * 10_000_000,
        cpu_system_ns: 500_000_000 + i * 10_000_000,
        memory_rss_bytes: 1_400_000 + i * 4096,
        memory_virtual_bytes: 2_600_000 + i * 4096,
        open_fds: Some(3),
        sockets: None,
        executable_name: "lg-busy".into(),
        minor_faults: 120,
        major_faults: 0,
        voluntary_switches: Some(1000),
        involuntary_switches: Some(3),
        command_args: "/tmp/vigil-bench/loadgen\x001000\x001000\x0020\x001000\x00".into(),
        user_name: "root".into(),
        group_name: "root".into(),
        ..ProcessRecord::default()
    }
}

/// Data points one [`process`] record becomes (11: no socket count, no disk I/O).
const POINTS_PER_PROCESS: usize = 11;

fn cpu_of_thread(tid: i32) -> Duration {
    cpu_of(&format!("/proc/self/task/{tid}/stat"))
}

fn cpu_of(stat: &str) -> Duration {
    // utime + stime (fields 14, 15) of a /proc stat file, in clock ticks (100 Hz).
    let s = std::fs::read_to_string(stat).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Thread ids of this process besides the calling thread.
fn other_threads() -> Vec<i32> {
    let me = nix::unistd::gettid().as_raw();
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|t| *t != me)
        .collect()
}

fn strings<'s>(items: impl Iterator<Item = &'s str>) -> pcommon::any_value::Value {
    pcommon::any_value::Value::ArrayValue(pcommon::ArrayValue {
        values: items
            .map(|s| pcommon::AnyValue {
                value: Some(pcommon::any_value::Value::StringValue(s.to_string())),
            })
            .collect(),
    })
}

fn any(v: Val<'_>) -> pcommon::AnyValue {
    use pcommon::any_value::Value;
    pcommon::AnyValue {
        value: Some(match v {
            Val::Str(s) => Value::StringValue(s.to_string()),
            Val::I64(i) => Value::IntValue(i),
            Val::F64(f) => Value::DoubleValue(f),
            Val::Bool(b) => Value::BoolValue(b),
            Val::StrArray(a) => strings(a.iter().map(String::as_str)),
            Val::Args(a) => strings(vigil_shipper::convert::args(a)),
        }),
    }
}

fn kv(a: Attr<'_>) -> pcommon::KeyValue {
    pcommon::KeyValue {
        key: a.key.to_string(),
        value: Some(any(a.val)),
        ..Default::default()
    }
}

/// The same request as `convert::pb::metrics_request`, through opentelemetry-proto's types.
fn prost_request(records: &[Record], d: &ResourceDefaults) -> Vec<u8> {
    let mut req = ExportMetricsServiceRequest::default();
    for r in records {
        convert::with_view(r.decoded().borrowed(), d, |v| {
            let View::Metrics { resource, points } = v else {
                return;
            };
            let mut attrs = Vec::new();
            resource.for_each(|a| attrs.push(kv(a)));
            let metrics = points
                .map(|p| {
                    let mut pattrs = Vec::new();
                    p.attrs.for_each(|a| pattrs.push(kv(a)));
                    let point = pmetrics::NumberDataPoint {
                        attributes: pattrs,
                        start_time_unix_nano: p.start_time_unix_nano,
                        time_unix_nano: p.time_unix_nano,
                        value: Some(match p.value {
                            MetricValue::I64(v) => pmetrics::number_data_point::Value::AsInt(v),
                            MetricValue::F64(v) => pmetrics::number_data_point::Value::AsDouble(v),
                        }),
                        ..Default::default()
                    };
                    pmetrics::Metric {
                        name: p.name.to_string(),
                        unit: p.unit.to_string(),
                        data: Some(match p.kind {
                            MetricKind::Gauge => pmetrics::metric::Data::Gauge(pmetrics::Gauge {
                                data_points: vec![point],
                            }),
                            MetricKind::Sum { monotonic } => {
                                pmetrics::metric::Data::Sum(pmetrics::Sum {
                                    data_points: vec![point],
                                    aggregation_temporality: 2,
                                    is_monotonic: monotonic,
                                })
                            }
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            req.resource_metrics.push(pmetrics::ResourceMetrics {
                resource: Some(PResource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_metrics: vec![pmetrics::ScopeMetrics {
                    scope: Some(pcommon::InstrumentationScope {
                        name: convert::SCOPE_NAME.into(),
                        version: convert::SCOPE_VERSION.into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        });
    }
    req.encode_to_vec()
}

fn encode(rounds: usize) {
    let d = ResourceDefaults::new("bench-host");
    let records: Vec<Record> = (0..2048)
        .map(|i| Record::Process(Box::new(process(i))))
        .collect();
    // Same message, both ways (checked once, then timed).
    let mut direct = Vec::new();
    let decoded: Vec<_> = records.iter().map(Record::decoded).collect();
    convert::pb::metrics_request(decoded.iter().map(Decoded::borrowed), &d, &mut direct);
    let a = ExportMetricsServiceRequest::decode(&direct[..]).unwrap();
    let b = ExportMetricsServiceRequest::decode(&prost_request(&records, &d)[..]).unwrap();
    assert_eq!(a, b, "both encoders write the same request");
    let time = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        t.elapsed().as_nanos() as f64 / (rounds * records.len()) as f64
    };
    let prost_ns = time(&mut || {
        black_box(prost_request(&records, &d));
    });
    let mut buf = Vec::new();
    let direct_ns = time(&mut || {
        buf.clear();
        convert::pb::metrics_request(decoded.iter().map(Decoded::borrowed), &d, &mut buf);
        black_box(&buf);
    });
    // The exporter's encoder, kept from round to round: every round after the first finds
    // each process's resource encoded (a steady agent's cycles).
    let mut procs = convert::pb::ProcessEncoder::default();
    let cached_ns = time(&mut || {
        buf.clear();
        convert::pb::metrics_request_chunked(
            decoded.iter().map(Decoded::borrowed),
            &d,
            &mut procs,
            &mut buf,
            |_| {},
        );
        black_box(&buf);
    });
    assert_eq!(procs.resources.stats.misses, records.len() as u64);
    let mut json = Vec::new();
    let json_ns = time(&mut || {
        json.clear();
        for r in &decoded {
            convert::json::write_record(r.borrowed(), &d, &mut json);
        }
        black_box(&json);
    });
    let mut json_cache = convert::cache::ResourceCache::new(convert::json::Json);
    let json_cached_ns = time(&mut || {
        json.clear();
        for r in &decoded {
            convert::json::write_record_cached(r.borrowed(), &d, &mut json_cache, &mut json);
        }
        black_box(&json);
    });
    // gzip of the same protobuf in bodies of PER_BATCH records: a fresh flate2 GzEncoder per
    // body, and the exporter's one stream reset per body.
    let bodies: Vec<Vec<u8>> = decoded
        .chunks(PER_BATCH)
        .map(|c| {
            let mut b = Vec::new();
            convert::pb::metrics_request(c.iter().map(Decoded::borrowed), &d, &mut b);
            b
        })
        .collect();
    let mut gz_len = 0;
    let fresh_ns = time(&mut || {
        use std::io::Write;
        gz_len = 0;
        for b in &bodies {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(b).unwrap();
            gz_len += gz.finish().unwrap().len();
        }
    });
    let mut stream = vigil_shipper::export::gzip::Gzip::default();
    let reused_ns = time(&mut || {
        for b in &bodies {
            stream.begin(b.len() / 8);
            stream.write(b).unwrap();
            black_box(stream.finish().unwrap());
        }
    });
    println!(
        "encode {} process records ({} B of protobuf): opentelemetry-proto/prost {prost_ns:.0} ns/record, \
         direct {direct_ns:.0} ns/record (prost/direct {:.1}x), direct with the resources cached \
         {cached_ns:.0} ns/record ({} B held, {:.0} B per process); JSON lines {json_ns:.0} ns/record, \
         cached {json_cached_ns:.0} ns/record ({} B held); \
         gzip (fast) in bodies of {PER_BATCH} records: a fresh GzEncoder per body {fresh_ns:.0} ns/record, \
         the exporter's reused stream {reused_ns:.0} ns/record (fresh/reused {:.2}x; {:.0} MB/s, {:.1}x smaller)",
        records.len(),
        direct.len(),
        prost_ns / direct_ns,
        procs.resources.bytes(),
        procs.resources.bytes() as f64 / procs.resources.len() as f64,
        json_cache.bytes(),
        fresh_ns / reused_ns,
        direct.len() as f64 / records.len() as f64 / reused_ns * 1e3,
        direct.len() as f64 / gz_len as f64
    );
}

fn batch_frame(frame: &mut BatchFrame, seq: u64, base: u64) -> Vec<u8> {
    for i in base..base + PER_BATCH as u64 {
        frame.push(&Record::Process(Box::new(process(i)))).unwrap();
    }
    frame.push(&log(seq as i64)).unwrap();
    frame.take(seq).frame
}

/// Journal + OTLP throughput in records/s shipped; `tls`: through stunnel4 with a test CA.
fn throughput(batches: u64, tls: bool) -> f64 {
    let rx = Receiver::start();
    rx.received.lock().unwrap().count_only = true;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut attachments = vigil_shipper::Attachments::default();
    let (cfg, _tls) = if tls {
        let pki = vigil_tests::backends::Pki::new(&["localhost"], &["127.0.0.1"]);
        let port = vigil_tests::otlp::free_port();
        let st = vigil_tests::backends::Stunnel::start(
            &pki,
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", rx.port),
            None,
        );
        let mut inputs = vigil_ipc_proto::delivery::ShipperInputs::default();
        let ca = pki.path("ca.pem");
        inputs.files.insert(ca.clone(), std::fs::read(&ca).unwrap());
        inputs.default_ca = Some(ca);
        attachments.inputs = Some(inputs_fd(&inputs));
        (
            otlp_cfg(format!("https://127.0.0.1:{port}")),
            Some((pki, st)),
        )
    } else {
        (otlp_cfg(rx.endpoint()), None)
    };
    // The product's batching (records per request, delay), not the tests' small batches.
    let default = OtlpConfig::default();
    let cfg = OtlpConfig {
        max_batch_records: default.max_batch_records,
        max_batch_delay_ms: default.max_batch_delay_ms,
        ..cfg
    };
    let per_request = cfg.max_batch_records;
    let init = init(&dir.path().join("journal"), Some(cfg), "");
    let before = other_threads();
    let mut sh = Shipper::start_with(init, attachments, |_| {});
    std::thread::sleep(Duration::from_millis(50));
    let shipper_tid = other_threads()
        .into_iter()
        .find(|t| !before.contains(t))
        .expect("shipper thread");
    let window = 64u64;
    let mut frame = BatchFrame::new();
    let cpu0 = cpu_of_thread(shipper_tid);
    let stunnel_stat = _tls
        .as_ref()
        .map(|(_, st)| format!("/proc/{}/stat", st.pid()));
    let others0 = (
        cpu_of("/proc/self/stat"),
        stunnel_stat.as_deref().map_or(Duration::ZERO, cpu_of),
    );
    let start = Instant::now();
    let (mut sent, mut acked, mut bytes) = (0u64, 0u64, 0usize);
    while acked < batches {
        while sent < batches && sent - acked < window {
            let f = batch_frame(&mut frame, sent, sent * PER_BATCH as u64);
            bytes += f.len();
            sh.collector.send_raw(&f).unwrap();
            sent += 1;
        }
        match sh.collector.recv::<ShipperToCollector>().unwrap() {
            ShipperToCollector::Ack { .. } => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    let t_ack = start.elapsed();
    let processes = batches as usize * PER_BATCH;
    let records = processes + batches as usize;
    let points_want = processes * POINTS_PER_PROCESS;
    loop {
        let r = rx.received.lock().unwrap();
        if r.log_count >= batches as usize && r.metric_count >= points_want {
            break;
        }
        drop(r);
        std::thread::sleep(Duration::from_millis(2));
    }
    let t_ship = start.elapsed();
    let cpu = cpu_of_thread(shipper_tid) - cpu0;
    // The rest of this process (collector stand-in, receiver) and stunnel, on the same cores.
    let process = cpu_of("/proc/self/stat").saturating_sub(others0.0);
    let stunnel = stunnel_stat
        .as_deref()
        .map_or(Duration::ZERO, cpu_of)
        .saturating_sub(others0.1);
    let st = sh.stats();
    println!(
        "throughput{}: {records} records ({processes} process records + {batches} kernel events, \
         {:.1} MB of IPC frames) in {batches} batches of {}, fsync policy batch ({} fdatasyncs: group commit), OTLP requests of up to {per_request} records",
        if tls {
            " over HTTPS (stunnel4 in front of the receiver)"
        } else {
            ""
        },
        bytes as f64 / 1e6,
        PER_BATCH + 1,
        st.get("journal_data_syncs").unwrap_or(0)
    );
    println!(
        "  journaled+acked: {:.0} records/s, {:.1} MB/s ({:.2} s)",
        records as f64 / t_ack.as_secs_f64(),
        bytes as f64 / 1e6 / t_ack.as_secs_f64(),
        t_ack.as_secs_f64()
    );
    raw_fsync_ceiling(batches, bytes / batches as usize);
    println!(
        "  shipped to the receiver (gunzipped, counted): {:.0} records/s = {:.0} data points/s ({:.2} s); \
         shipper thread CPU {:.2} µs/record; retries {:?}",
        records as f64 / t_ship.as_secs_f64(),
        (points_want + batches as usize) as f64 / t_ship.as_secs_f64(),
        t_ship.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / records as f64,
        st.get("retries")
    );
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    println!(
        "  CPU per record on the two cores: shipper thread {:.2} µs, collector stand-in + \
         receiver {:.2} µs, stunnel {:.2} µs; wall {:.2} µs",
        per_record(cpu),
        per_record(process.saturating_sub(cpu)),
        per_record(stunnel),
        per_record(t_ship)
    );
    sh.shutdown();
    records as f64 / t_ship.as_secs_f64()
}

/// The disk's ceiling for the same work: append `batches` chunks of `bytes_per_batch` bytes to
/// one file with fdatasync after each (what the journal must do at least).
fn raw_fsync_ceiling(batches: u64, bytes_per_batch: usize) {
    use std::io::Write;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let chunk = vec![0x5au8; bytes_per_batch];
    let start = Instant::now();
    for _ in 0..batches {
        f.write_all(&chunk).unwrap();
        f.sync_data().unwrap();
    }
    let t = start.elapsed();
    println!(
        "  ceiling (write + fdatasync per batch, same bytes, no IPC/encoding): {:.0} batches/s, {:.1} MB/s",
        batches as f64 / t.as_secs_f64(),
        (batches as usize * bytes_per_batch) as f64 / 1e6 / t.as_secs_f64()
    );
}

/// The journal alone (no exporter configured): validate + append + fsync + ack.
fn journal_only(batches: u64) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut sh = Shipper::start(init(&dir.path().join("journal"), None, ""));
    let window = 64u64;
    let mut frame = BatchFrame::new();
    let start = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < batches {
        while sent < batches && sent - acked < window {
            let f = batch_frame(&mut frame, sent, sent * PER_BATCH as u64);
            sh.collector.send_raw(&f).unwrap();
            sent += 1;
        }
        match sh.collector.recv::<ShipperToCollector>().unwrap() {
            ShipperToCollector::Ack { .. } => acked += 1,
            other => panic!("{other:?}"),
        }
    }
    let t = start.elapsed();
    println!(
        "  journal only (no exporter): {:.0} records/s, {:.0} batches/s",
        (batches as usize * (PER_BATCH + 1)) as f64 / t.as_secs_f64(),
        batches as f64 / t.as_secs_f64()
    );
    sh.shutdown();
}

fn latency(n: i64) {
    let rx = Receiver::start();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // The default configuration: gzip, max_batch_delay_ms 1000 (which events do not wait for).
    let cfg = otlp_cfg(rx.endpoint());
    let default = OtlpConfig::default();
    let cfg = OtlpConfig {
        max_batch_delay_ms: default.max_batch_delay_ms,
        max_batch_records: default.max_batch_records,
        compression: default.compression,
        ..cfg
    };
    let mut sh = Shipper::start(init(&dir.path().join("journal"), Some(cfg), ""));
    let mut sent_at = HashMap::new();
    for i in 0..n {
        sent_at.insert(i, Instant::now());
        assert!(sh.send(i as u64, vec![log(i)]));
        std::thread::sleep(Duration::from_millis(2));
    }
    let want = (0..n).collect();
    rx.wait_ids(&want, Duration::from_secs(30));
    let mut lat = Vec::new();
    let r = rx.received.lock().unwrap();
    for l in &r.logs {
        let id: i64 = attr_map(&l.log.attributes)["test.id"].parse().unwrap();
        if let Some(s) = sent_at.get(&id) {
            lat.push(l.arrived.duration_since(*s));
        }
    }
    drop(r);
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "latency collector→receiver ({} kernel events, default batch delay, fdatasync before each ack, gzip): p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    sh.shutdown();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a quick smoke.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, batches, events): (usize, u64, i64) =
        if quick { (1, 8, 20) } else { (20, 1500, 1000) };
    encode(rounds);
    let plain = throughput(batches, false);
    let https = throughput(batches, true);
    println!(
        "  HTTPS / plain HTTP shipped records/s: {:.0} / {:.0} = {:.2}",
        https,
        plain,
        https / plain
    );
    journal_only(batches);
    latency(events);
}
