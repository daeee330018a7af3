//! `http/*`: the front_api example's handler called through tower, in
//! process, without the layer (`no_layer`, the floor) and through it
//! (`layer_allow`, `layer_refuse`: the forum thread's 403). The goal is the
//! layer within 500 ns of the floor.

#![allow(
    clippy::expect_used,
    reason = "a benchmark whose setup fails should stop at once"
)]

use std::hint::black_box;
use std::time::Duration;

use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

mod front;

use front::{ALLOWED, Front, REFUSED, request};

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let front = Front::new(&runtime);
    let bearer = front.bearer.as_str();
    let status = |service: &axum::Router, path| {
        runtime
            .block_on(service.clone().oneshot(request(path, bearer)))
            .map(|response| response.status())
    };
    assert_eq!(status(&front.floor, ALLOWED), Ok(StatusCode::OK));
    assert_eq!(status(&front.layered, ALLOWED), Ok(StatusCode::OK));
    assert_eq!(status(&front.layered, REFUSED), Ok(StatusCode::FORBIDDEN));

    let mut group = c.benchmark_group("http");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (name, service, path) in [
        ("no_layer", &front.floor, ALLOWED),
        ("layer_allow", &front.layered, ALLOWED),
        ("layer_refuse", &front.layered, REFUSED),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(service.clone().oneshot(black_box(request(path, bearer)))))
        });
    }
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
