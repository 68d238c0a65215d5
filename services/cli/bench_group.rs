//! `gradebook bench --only group`: a group of three registry nodes on
//! loopback (plaintext, as the other registry parts): how long a
//! registration through one node takes to reach a watcher of another
//! (p50/p99), how long an instance takes to move to another node after
//! kill -9 of the node it registered through, and how long an SDK watcher
//! takes to be live again on another node after kill -9 of its own.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::cli::bench::{
    BenchArgs, Process, free_port, health_server, ms, percentile, spawn_daemon, wait_serving,
};
use crate::mesh::Tls;
use crate::mesh::backoff::Backoff;
use crate::mesh::channel::ChannelSettings;
use crate::mesh::channel::metrics::ChannelMetrics;
use crate::mesh::client::{lazy_channel, registry_client};
use crate::mesh::discovery;
use crate::mesh::registry_nodes::RegistryNodes;
use crate::mesh::shutdown::Shutdown;
use crate::model::registry::HEALTH_SERVICE_METADATA;
use crate::pb::registry::v1 as pb;

/// How long one change may take to arrive before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(15);

/// A registry node of the group.
struct Node {
    url: String,
    process: Process,
}

/// Starts `count` registry nodes that know each other.
async fn start_group(count: usize) -> anyhow::Result<Vec<Node>> {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect::<Result<_, _>>()?;
    let peers = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for port in ports {
        let process = spawn_daemon(&[
            "registry".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--peers".into(),
            peers.clone(),
            "--ship-logs".into(),
            "false".into(),
        ])?;
        nodes.push(Node {
            url: format!("http://127.0.0.1:{port}"),
            process,
        });
    }
    for node in &nodes {
        wait_serving(&node.url, &Tls::Off).await?;
    }
    Ok(nodes)
}

/// Runs the group benchmark.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    println!("registry group: 3 nodes on loopback, plaintext");
    let mut nodes = start_group(3).await?;
    let client = |node: &Node| -> anyhow::Result<_> {
        Ok(registry_client(lazy_channel(
            "--registry",
            &node.url,
            "registry",
            &Tls::Off,
        )?))
    };
    let health = health_server(&["bench".into()], &Tls::Off).await?;

    // A registration through A, until a watcher of C sees it.
    let mut watch = client(&nodes[2])?
        .watch(pb::WatchRequest {
            services: vec!["bench".into()],
        })
        .await?
        .into_inner();
    watch.next().await.context("the snapshot")??;
    let mut through_a = client(&nodes[0])?;
    let mut times = Vec::new();
    for round in 0..args.rounds {
        let id = format!("bench-{round}");
        let start = Instant::now();
        through_a
            .register(pb::RegisterRequest {
                service: "bench".into(),
                instance_id: id.clone(),
                address: health.to_string(),
                metadata: [(HEALTH_SERVICE_METADATA.to_owned(), "bench".to_owned())].into(),
                ..Default::default()
            })
            .await?;
        loop {
            let event = tokio::time::timeout(PATIENCE, watch.next())
                .await
                .context("the change reaches the other node")?
                .context("the watch ended")??;
            if let Some(pb::watch_event::Event::Change(change)) = event.event
                && change.kind == pb::ChangeKind::Added as i32
                && change.instance.is_some_and(|i| i.instance_id == id)
            {
                break;
            }
        }
        times.push(start.elapsed());
        through_a
            .deregister(pb::DeregisterRequest { instance_id: id })
            .await?;
    }
    times.sort();
    println!(
        "  registration through A -> ADDED at a watcher of C: p50 {}, p99 {} ({} rounds)",
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0)),
        times.len()
    );

    // kill -9 of the node a real daemon registered through, until another
    // node lists it registered through itself.
    let data =
        std::env::temp_dir().join(format!("gradebook-bench-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port()?;
    let urls = nodes
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let _log = spawn_daemon(&[
        "log".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--registry".into(),
        urls,
        "--data-dir".into(),
        data.display().to_string(),
        "--ship-logs".into(),
        "false".into(),
    ])?;
    let on_c = client(&nodes[2])?;
    // The log daemon as C lists it, if it does.
    let log_on_c = || {
        let mut on_c = on_c.clone();
        async move {
            let listed = on_c
                .list(pb::ListRequest {
                    service: crate::log::SERVICE_NAME.into(),
                    include_unhealthy: false,
                })
                .await?
                .into_inner();
            Ok::<_, tonic::Status>(listed.instances.into_iter().next())
        }
    };
    let deadline = Instant::now() + PATIENCE;
    let before = loop {
        if let Some(log) = log_on_c().await? {
            break log;
        }
        if Instant::now() > deadline {
            bail!("the log daemon did not register");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let owner = before.record_version.map(|v| v.origin).unwrap_or_default();
    let start = Instant::now();
    nodes[0].process.0.kill()?;
    let moved = loop {
        if log_on_c()
            .await?
            .and_then(|i| i.record_version)
            .is_some_and(|v| v.origin != owner)
        {
            break start.elapsed();
        }
        if start.elapsed() > PATIENCE {
            bail!("the log daemon did not move to another node");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "  kill -9 of its registry node -> the instance registered through another: {}",
        ms(moved)
    );
    let _ = std::fs::remove_dir_all(&data);

    // kill -9 of the node an SDK watcher uses, until its view is live
    // again, on another node (A is down already: B, then C).
    let next = nodes[2].url.clone();
    let failovers = watcher_failover(&mut nodes[1], &next).await?;
    println!(
        "  kill -9 of a watcher's registry node -> its view live again on another: {}",
        ms(failovers)
    );
    Ok(())
}

/// Watches through `node` first and `next` after it with the SDK's own
/// dependency watch; kills `node`; returns how long until the view is live
/// again.
async fn watcher_failover(node: &mut Node, next: &str) -> anyhow::Result<Duration> {
    let registry = RegistryNodes::new("--registry", &format!("{},{next}", node.url), &Tls::Off)?;
    let shutdown = Shutdown::new();
    let (view, _task) = discovery::spawn(
        registry,
        vec!["bench".into()],
        ChannelSettings::default(),
        &Tls::Off,
        &ChannelMetrics::default(),
        Backoff::default(),
        &shutdown,
    );
    let mut state = view.subscribe();
    let live = |state: &mut tokio::sync::watch::Receiver<_>, want: bool| {
        let mut state = state.clone();
        async move {
            tokio::time::timeout(
                PATIENCE,
                state.wait_for(|deps: &std::sync::Arc<discovery::Dependencies>| deps.live == want),
            )
            .await
            .map(|_| ())
        }
    };
    live(&mut state, true)
        .await
        .context("the watcher did not start")?;
    let start = Instant::now();
    node.process.0.kill()?;
    live(&mut state, false)
        .await
        .context("the watcher did not notice")?;
    live(&mut state, true)
        .await
        .context("the watcher did not fail over")?;
    let took = start.elapsed();
    shutdown.cancel();
    Ok(took)
}
