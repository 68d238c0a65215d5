//! Gossip Glomers #3d and #3e, alone in this test binary (so no other test
//! competes for the two cores): 25 nodes, 100 ms between nodes, 100
//! requests a second. Our goal is both challenges' targets at once and
//! better: under 10 messages between nodes per operation, a median stable
//! latency under 400 ms and a maximum under 600 ms.

mod support;

use support::glomers;

#[test]
fn broadcast_efficiency_3d_and_3e_at_once() {
    let report = glomers(&[
        "-w",
        "broadcast",
        "--node-count",
        "25",
        "--time-limit",
        "10s",
        "--rate",
        "100",
        "--latency",
        "100ms",
        "--recovery",
        "3s",
    ]);
    assert_eq!(report["valid"], true, "{report}");
    let msgs_per_op = report["msgs_per_op"].as_f64().unwrap();
    let latencies = &report["broadcast"]["stable_latencies"];
    let (median, max) = (
        latencies["median"].as_u64().unwrap(),
        latencies["max"].as_u64().unwrap(),
    );
    assert!(msgs_per_op < 10.0, "msgs-per-op {msgs_per_op}: {report}");
    assert!(median < 400, "median {median} ms: {report}");
    assert!(max < 600, "max {max} ms: {report}");
}
