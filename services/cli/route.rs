//! `gradebook route`: shows or sets how the callers of a service split
//! their requests between its versions (the traffic policy the registry
//! holds and streams to every caller). `--weight 2.0.0=10 --weight
//! 1.4.0=90` for a canary, `--only 2.0.0` for a blue-green switch,
//! `--clear` for the default (every healthy instance alike).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::cli::{RegistryArg, TlsArgs};
use crate::mesh::api::RegistryApi;
use crate::mesh::tls::identity::ADMIN;
use crate::model::registry::{Instance, validate_service_name};
use crate::model::traffic::{PolicyRecord, TrafficPolicy, parse_weight};

/// `gradebook route`.
#[derive(Debug, Clone, clap::Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The service; without one, every service's policy is shown.
    pub service: Option<String>,
    /// A version's share of 100 (VERSION=WEIGHT, once per version; they
    /// must add up to 100).
    #[arg(long = "weight", value_name = "VERSION=WEIGHT", requires = "service")]
    pub weights: Vec<String>,
    /// Send every request to this version's instances.
    #[arg(
        long,
        value_name = "VERSION",
        conflicts_with = "weights",
        requires = "service"
    )]
    pub only: Option<String>,
    /// Back to the default: every healthy instance alike.
    #[arg(long, conflicts_with_all = ["weights", "only"], requires = "service")]
    pub clear: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl RouteArgs {
    /// The policy the flags ask for, checked; `None` when they ask for none
    /// (show only).
    fn wanted(&self) -> anyhow::Result<Option<TrafficPolicy>> {
        if self.clear {
            return Ok(Some(TrafficPolicy::Equal));
        }
        if let Some(version) = &self.only {
            return Ok(Some(TrafficPolicy::only(version).context("--only")?));
        }
        if self.weights.is_empty() {
            return Ok(None);
        }
        let weights = self
            .weights
            .iter()
            .map(|w| parse_weight(w))
            .collect::<Result<Vec<_>, _>>()
            .context("--weight")?;
        Ok(Some(TrafficPolicy::weights(weights).context("--weight")?))
    }
}

/// One service's routing as printed.
#[derive(Debug, Serialize)]
struct Row {
    service: String,
    policy: String,
    /// Per version: instances SERVING, and registered.
    versions: BTreeMap<String, (usize, usize)>,
    set_at: Option<String>,
}

impl Row {
    fn cells(&self) -> [String; 3] {
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(version, (serving, all))| format!("{version} ({serving}/{all} serving)"))
            .collect();
        [
            self.service.clone(),
            self.policy.clone(),
            versions.join(", "),
        ]
    }
}

/// The rows of every service that has instances or a policy.
fn rows(instances: &[Instance], policies: &[PolicyRecord]) -> Vec<Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for instance in instances {
        let entry = rows
            .entry(instance.service.clone())
            .or_insert_with(|| empty_row(&instance.service));
        let counts = entry.versions.entry(instance.version.clone()).or_default();
        counts.0 += usize::from(instance.health.is_healthy());
        counts.1 += 1;
    }
    for record in policies {
        let entry = rows
            .entry(record.service.clone())
            .or_insert_with(|| empty_row(&record.service));
        entry.policy = record.policy.to_string();
        entry.set_at = Some(humantime::format_rfc3339_seconds(record.set_at).to_string());
    }
    rows.into_values().collect()
}

fn empty_row(service: &str) -> Row {
    Row {
        service: service.to_owned(),
        policy: TrafficPolicy::Equal.to_string(),
        versions: BTreeMap::new(),
        set_at: None,
    }
}

/// Formats rows as an aligned table.
fn table(rows: &[Row]) -> String {
    let mut cells = vec![["SERVICE", "POLICY", "VERSIONS"].map(String::from)];
    cells.extend(rows.iter().map(Row::cells));
    let widths: Vec<usize> = (0..3)
        .map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in cells {
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

/// Runs `gradebook route`.
pub async fn run(args: RouteArgs) -> anyhow::Result<()> {
    if let Some(service) = &args.service {
        validate_service_name("SERVICE", service)?;
    }
    let wanted = args.wanted()?;
    let tls = args.tls.load(ADMIN)?;
    let registry = RegistryApi::connect(&args.registry.registry, &tls)?;
    let at = &args.registry.registry;
    if let (Some(service), Some(policy)) = (&args.service, &wanted) {
        let record = registry
            .set_policy(service, policy)
            .await
            .with_context(|| format!("cannot set the traffic policy of {service} at {at}"))?;
        eprintln!("{}: {}", record.service, record.policy);
    }
    let service = args.service.as_deref();
    let instances = registry
        .list(service, true)
        .await
        .with_context(|| format!("cannot list services at {at}"))?;
    let policies = registry
        .policies(service)
        .await
        .with_context(|| format!("cannot list traffic policies at {at}"))?;
    let rows = rows(&instances, &policies);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::registry::Health;

    #[test]
    fn rows_count_versions_and_show_the_policy() {
        let mut old = Instance::for_test("grading", "g-1", Health::Serving);
        old.version = "1.4.0".into();
        let mut new = Instance::for_test("grading", "g-2", Health::Unknown);
        new.version = "2.0.0".into();
        let log = Instance::for_test("log", "l-1", Health::Serving);
        let policy = PolicyRecord {
            service: "grading".into(),
            policy: TrafficPolicy::only("2.0.0").unwrap(),
            version: Default::default(),
            set_at: std::time::UNIX_EPOCH,
        };
        let rows = rows(&[old, new, log], &[policy]);
        let printed = table(&rows);
        assert!(
            printed.contains("only 2.0.0")
                && printed.contains("1.4.0 (1/1 serving), 2.0.0 (0/1 serving)"),
            "{printed}"
        );
        assert!(printed.contains("every healthy instance"), "{printed}");
    }
}
