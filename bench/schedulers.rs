//! Nanoseconds per scheduling decision, for every scheduler at 8, 64 and 1024
//! reals with uneven weights and connection counts. `cargo bench --bench schedulers`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ulvs::{
    config::SchedulerKind,
    sched::{self, testing},
};

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    use SchedulerKind::*;
    for kind in [Rr, Wrr, Lc, Wlc, Sed, Nq, Lblc, Lblcr, Dh, Sh, Mh, Fo, Ovf, Twos] {
        for size in [8usize, 64, 1024] {
            let weights: Vec<u32> = (0..size).map(|i| 1 + (i as u32 * 7) % 5).collect();
            let reals = testing::reals(&weights);
            let _held: Vec<_> = reals
                .iter()
                .enumerate()
                .flat_map(|(i, real)| testing::load(real, (i % 3) as u32, (i % 5) as u32))
                .collect();
            let scheduler = sched::build(kind, &[], &reals, None, 1);
            let flow = testing::flow();
            group.bench_with_input(BenchmarkId::new(kind.name(), size), &size, |b, _| {
                b.iter(|| scheduler.pick(black_box(&reals), black_box(&flow)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
