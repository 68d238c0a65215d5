//! `gradebook services`: the registry's view of the mesh as a table (or
//! JSON), once or live with `--watch`.

use std::time::SystemTime;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;

use crate::cli::{RegistryArg, TlsArgs};
use crate::mesh::api::RegistryApi;
use crate::mesh::tls::identity::ADMIN;
use crate::model::registry::{Change, Instance, WatchUpdate};

/// `gradebook services`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Keep running and print every change as it happens.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON (one object per line with --watch) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One instance as printed.
#[derive(Debug, Serialize)]
struct Row {
    service: String,
    instance: String,
    address: String,
    version: String,
    health: String,
    requires: Vec<String>,
    last_check: Option<String>,
    last_error: Option<String>,
}

impl From<&Instance> for Row {
    fn from(i: &Instance) -> Self {
        Row {
            service: i.service.clone(),
            instance: i.instance_id.clone(),
            address: i.address.clone(),
            version: i.version.clone(),
            health: i.health.to_string(),
            requires: i.requires.clone(),
            last_check: i.last_check.map(rfc3339),
            last_error: i.last_error.clone(),
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Formats instances as an aligned table.
pub fn table(instances: &[Instance]) -> String {
    let mut rows = vec![["SERVICE", "INSTANCE", "ADDRESS", "VERSION", "HEALTH"].map(String::from)];
    for i in instances {
        rows.push([
            i.service.clone(),
            i.instance_id.clone(),
            i.address.clone(),
            i.version.clone(),
            i.health.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `gradebook services`.
pub async fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let tls = args.tls.load(ADMIN)?;
    let registry = RegistryApi::connect(&args.registry.registry, &tls)?;
    if !args.watch {
        let listing = registry
            .listing(args.service.as_deref(), true)
            .await
            .with_context(|| format!("cannot list services at {}", args.registry.registry))?;
        if listing.catching_up {
            eprintln!(
                "note: the registry node that answered has just started and is catching up with its peers; instances may be missing"
            );
        }
        let instances = listing.instances;
        if args.json {
            let rows: Vec<Row> = instances.iter().map(Row::from).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", table(&instances));
        }
        return Ok(());
    }
    let mut stream = registry
        .watch(args.service.clone().into_iter().collect())
        .await
        .with_context(|| format!("cannot watch services at {}", args.registry.registry))?;
    while let Some(update) = stream.next().await {
        let update = update.context("the watch stream broke")?;
        match update {
            WatchUpdate::Snapshot { instances, .. } => {
                if args.json {
                    let rows: Vec<Row> = instances.iter().map(Row::from).collect();
                    println!("{}", serde_json::json!({ "snapshot": rows }));
                } else {
                    print!("{}", table(&instances));
                }
            }
            WatchUpdate::Change(change) => {
                let Change { kind, instance } = *change;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "change": kind.as_str(), "instance": Row::from(&instance) })
                    );
                } else {
                    println!(
                        "{} {:<14} {} {} {} {}",
                        rfc3339(SystemTime::now()),
                        kind.as_str(),
                        instance.service,
                        instance.instance_id,
                        instance.address,
                        instance.health
                    );
                }
            }
            WatchUpdate::Policy(record) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "policy": { "service": record.service, "rule": record.policy.to_string() } })
                    );
                } else {
                    println!(
                        "{} {:<14} {} {}",
                        rfc3339(SystemTime::now()),
                        "POLICY",
                        record.service,
                        record.policy
                    );
                }
            }
        }
    }
    Ok(())
}
