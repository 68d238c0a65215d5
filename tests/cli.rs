//! The `gradebook` command line against real daemons: `services`,
//! `health-check`, `logs`, and `--help` for every subcommand.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Mesh, PATIENCE, binary, eventually};

fn gradebook(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("run gradebook")
}

/// Runs a tool that finds the test's certificates through `GRADEBOOK_CERTS`.
fn tool(certs: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("GRADEBOOK_CERTS", certs)
        .output()
        .expect("run gradebook")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "registry",
        "log",
        "services",
        "logs",
        "health-check",
        "bench",
    ] {
        let output = gradebook(&[sub, "--help"]);
        assert!(output.status.success(), "{sub} --help");
        assert!(stdout(&output).contains("Usage: gradebook"), "{sub}");
    }
    let output = gradebook(&["registry", "--check-interval", "soon"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--check-interval"));
}

#[tokio::test]
async fn services_health_check_and_logs() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &[]).await;
    let certs = &registry.certs;
    support::wait_health(
        &registry,
        "log",
        gradebook::pb::registry::v1::HealthStatus::Serving,
    )
    .await;

    let table = stdout(&tool(certs, &["services", "--registry", &registry.url()]));
    let header = table.lines().next().unwrap();
    for column in ["SERVICE", "INSTANCE", "ADDRESS", "VERSION", "HEALTH"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("log ") && l.contains(&log.address()) && l.contains("SERVING")),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(&tool(
        certs,
        &["services", "--json", "--registry", &registry.url()],
    )))
    .unwrap();
    let services: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        services.contains(&"log".to_owned()) && services.contains(&"registry".to_owned()),
        "{json}"
    );

    assert!(
        tool(certs, &["health-check", &log.address()])
            .status
            .success()
    );
    assert!(
        tool(
            certs,
            &[
                "health-check",
                &log.url(),
                "--service",
                "gradebook.log.v1.LogService"
            ]
        )
        .status
        .success()
    );
    let unknown = tool(
        certs,
        &["health-check", &log.address(), "--service", "nope"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    let dead = tool(
        certs,
        &[
            "health-check",
            &format!("127.0.0.1:{}", support::free_port()),
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(dead.status.code(), Some(1));

    // The registry ships its records; `gradebook logs` finds them through the registry.
    let lines = eventually(
        "gradebook logs shows registry records",
        PATIENCE,
        || async {
            let out = stdout(&tool(
                certs,
                &[
                    "logs",
                    "--registry",
                    &registry.url(),
                    "--service",
                    "registry",
                    "--grep",
                    "catalog changed",
                ],
            ));
            (!out.is_empty()).then_some(out)
        },
    )
    .await;
    assert!(
        lines
            .lines()
            .all(|l| l.contains("registry") && l.contains("catalog changed")),
        "{lines}"
    );
    let json_lines = stdout(&tool(
        certs,
        &[
            "logs",
            "--json",
            "--registry",
            &registry.url(),
            "--level",
            "info",
            "-n",
            "5",
        ],
    ));
    for line in json_lines.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["sequence"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn a_tool_printing_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    support::wait_health(
        &registry,
        "log",
        gradebook::pb::registry::v1::HealthStatus::Serving,
    )
    .await;
    // Far more than a pipe holds (64 KiB), written as the `loadgen` service.
    let records: Vec<_> = (0..1000)
        .map(|i| gradebook::pb::log::v1::LogRecord {
            timestamp: None,
            service: "loadgen".into(),
            instance: "loadgen-1".into(),
            level: gradebook::pb::log::v1::Level::Info as i32,
            message: format!("record {i} {}", "x".repeat(200)),
            fields: Default::default(),
            trace_id: String::new(),
            span_id: String::new(),
            sequence: 0,
        })
        .collect();
    support::log_client_as(&log, "loadgen")
        .write(futures::stream::iter([
            gradebook::pb::log::v1::WriteRequest {
                records,
                ..Default::default()
            },
        ]))
        .await
        .unwrap();

    // `gradebook logs -n 1000 | head -1`: the reader goes after one line.
    let mut child = Command::new(binary())
        .args(["logs", "-n", "1000", "--service", "loadgen", "--registry"])
        .arg(registry.url())
        .env("GRADEBOOK_CERTS", &registry.certs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("loadgen"), "{first}");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "no panic exit");
}

#[test]
fn a_version_a_policy_could_not_name_is_refused_at_start() {
    for bad in ["two words", "", &"9".repeat(65)] {
        let output = gradebook(&["log", "--report-version", bad]);
        assert!(!output.status.success(), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--report-version"), "{stderr}");
        assert!(
            stderr.contains("printable ASCII characters without spaces"),
            "{stderr}"
        );
    }
}
