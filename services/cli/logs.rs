//! `gradebook logs`: queries the central log (newest first) or follows it
//! with `-f`, finding the log service through the registry.

use std::time::SystemTime;

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::cli::{RegistryArg, TlsArgs};
use crate::mesh::api::{LogApi, RegistryApi};
use crate::mesh::config::{LOG_SERVICE, REGISTRY_CALL_TIMEOUT};
use crate::mesh::tls::identity::ADMIN;
use crate::model::log::{Level, LogFilter, LogRecord};

/// `gradebook logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub registry: RegistryArg,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Keep running and print new records as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only records at this level or above (trace, debug, info, warn, error).
    #[arg(long)]
    pub level: Option<Level>,
    /// Only records of this trace.
    #[arg(long)]
    pub trace: Option<String>,
    /// Only records whose message contains this text.
    #[arg(long)]
    pub grep: Option<String>,
    /// How many records to show (the newest), at most 1000.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: u32,
    /// Print one JSON object per record.
    #[arg(long)]
    pub json: bool,
}

/// Formats one record as a line.
pub fn format_record(record: &LogRecord) -> String {
    let mut line = format!(
        "{} {:<5} {} [{}] {}",
        humantime::format_rfc3339_millis(record.timestamp),
        record.level.as_str(),
        record.service,
        record.instance,
        record.message
    );
    for (key, value) in &record.fields {
        line.push_str(&format!(" {key}={value}"));
    }
    if let Some(trace) = &record.trace_id {
        line.push_str(&format!(" trace_id={trace}"));
    }
    line
}

fn json_record(record: &LogRecord) -> serde_json::Value {
    serde_json::json!({
        "sequence": record.sequence,
        "timestamp": humantime::format_rfc3339_millis(record.timestamp).to_string(),
        "service": record.service,
        "instance": record.instance,
        "level": record.level.as_str(),
        "message": record.message,
        "fields": record.fields,
        "trace_id": record.trace_id,
    })
}

fn print(record: &LogRecord, json: bool) {
    if json {
        println!("{}", json_record(record));
    } else {
        println!("{}", format_record(record));
    }
}

/// Runs `gradebook logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    if args.limit == 0 || args.limit > 1000 {
        bail!("--limit must be from 1 to 1000");
    }
    let tls = args.tls.load(ADMIN)?;
    let registry = RegistryApi::connect(&args.registry.registry, &tls)?;
    let instances = registry
        .list(Some(LOG_SERVICE), false)
        .await
        .with_context(|| format!("cannot ask the registry at {}", args.registry.registry))?;
    if instances.is_empty() {
        bail!(
            "no healthy log service is registered at {}",
            args.registry.registry
        );
    }
    let logs = LogApi::at_instances(&instances, REGISTRY_CALL_TIMEOUT, &tls);
    let filter = LogFilter {
        service: args.service.clone(),
        min_level: args.level,
        since: None::<SystemTime>,
        until: None,
        contains: args.grep.clone(),
        trace_id: args.trace.clone(),
    };
    if args.follow {
        let mut stream = logs.tail(&filter, args.limit).await?;
        while let Some(record) = stream.next().await {
            print(&record.context("the tail stream broke")?, args.json);
        }
        return Ok(());
    }
    let page = logs
        .query(&filter, args.limit)
        .await
        .context("cannot query the log service")?;
    if !page.unanswered.is_empty() {
        eprintln!(
            "warning: these log instances did not answer, so their records are missing: {}",
            page.unanswered.join(", ")
        );
    }
    // Newest first from the service; oldest first on a terminal, like a log file.
    for record in page.records.iter().rev() {
        print(record, args.json);
    }
    Ok(())
}
