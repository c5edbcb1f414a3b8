//! Criterion view of vigil's two hot IPC paths over a real SEQPACKET pair
//! (`cargo bench -p vigil-bench --bench ipc`). Percentiles (p99) come from
//! `cargo run --release -p vigil-bench --bin vigil-ipc-bench`, which times every iteration.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_bench::*;
use vigil_ipc_proto::Channel;

fn fd_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("privhelper_fdstats_round_trip");
    for n in [1usize, 64, 512] {
        let (mut a, b) = Channel::pair().unwrap();
        let h = spawn_fd_responder(b);
        let req = fd_request(n);
        g.bench_function(format!("{n}_pids"), |bch| {
            bch.iter(|| round_trip(&mut a, &req))
        });
        drop(a);
        h.join().unwrap();
    }
    g.finish();
}

fn batch_stream(c: &mut Criterion) {
    let per =
        records_per_frame().min(vigil_ipc_proto::CollectorConfig::default().max_batch_records);
    let frames = 200u64;
    let mut g = c.benchmark_group("collector_to_shipper");
    g.throughput(Throughput::Elements(per as u64 * frames));
    g.sample_size(20);
    g.bench_function(format!("{frames}_batches_of_{per}_records"), |b| {
        b.iter(|| stream_batches(per, frames, 64))
    });
    g.finish();
}

criterion_group!(benches, fd_round_trip, batch_stream);
criterion_main!(benches);
