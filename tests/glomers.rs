//! The Gossip Glomers workloads against real `gradebook maelstrom`
//! processes, in the Maelstrom-like harness (`gradebook glomers`), with
//! fixed seeds and small sizes: the checkers' verdicts must hold.

mod support;

use support::glomers;

#[test]
fn echo_answers_every_request() {
    let report = glomers(&[
        "-w",
        "echo",
        "--node-count",
        "1",
        "--time-limit",
        "2s",
        "--rate",
        "50",
    ]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["echo_errors"], 0);
    assert!(report["ok"].as_u64().unwrap() > 20, "{report}");
}

#[test]
fn unique_ids_stay_unique_and_available_under_partitions() {
    let report = glomers(&[
        "-w",
        "unique-ids",
        "--node-count",
        "3",
        "--time-limit",
        "3s",
        "--rate",
        "1000",
        "--nemesis",
        "partition",
        "--nemesis-interval",
        "500ms",
    ]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["duplicated_ids"], 0);
    assert_eq!(report["ok"], report["operations"], "total availability");
}

#[test]
fn broadcast_on_one_node_3a_and_five_nodes_3b() {
    for nodes in ["1", "5"] {
        let report = glomers(&[
            "-w",
            "broadcast",
            "--node-count",
            nodes,
            "--time-limit",
            "3s",
            "--rate",
            "10",
            "--recovery",
            "2s",
        ]);
        assert_eq!(report["valid"], true, "{nodes} nodes: {report}");
        assert_eq!(report["broadcast"]["lost"], serde_json::json!([]));
        assert_eq!(report["broadcast"]["never_read"], 0, "{report}");
    }
}

#[test]
fn broadcast_loses_nothing_to_partitions_3c() {
    let report = glomers(&[
        "-w",
        "broadcast",
        "--node-count",
        "5",
        "--time-limit",
        "6s",
        "--rate",
        "10",
        "--nemesis",
        "partition",
        "--nemesis-interval",
        "1s",
        "--recovery",
        "3s",
        "--seed",
        "3",
    ]);
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["broadcast"]["lost"], serde_json::json!([]));
    assert!(
        report["dropped"].as_u64().unwrap() > 0,
        "partitions did cut messages: {report}"
    );
}
