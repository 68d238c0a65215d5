//! `gradebook migrate`: the operators' tool for grading's schema: `status`
//! (each migration, applied or pending, expand or contract, reversible or
//! not), `up` (with a backup first before an irreversible migration),
//! `down` (reversible migrations only), `backup`, and `restore` (which
//! says what it undoes and runs only with `--yes`).

use std::path::PathBuf;

use anyhow::bail;

use crate::grading::DatabaseConfig;
use crate::grading::schema::plan::{Compatibility, Direction, Plan};
use crate::grading::schema::tool::{self, Status};
use crate::grading::schema::{Applied, Migration};

/// `gradebook migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Where the SQLite database lives (when there is no --database-url).
    #[arg(
        long,
        global = true,
        env = "GRADEBOOK_DATA_DIR",
        default_value = "data/grading"
    )]
    pub data_dir: PathBuf,
    /// The PostgreSQL database (`postgres://...`); absent: SQLite under
    /// --data-dir.
    #[arg(long, global = true, env = "GRADEBOOK_DATABASE_URL")]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `gradebook migrate`'s actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Show the schema version and every migration, applied or pending.
    Status,
    /// Apply pending migrations (contract ones included), taking a backup
    /// first when one of them is irreversible.
    Up {
        /// The version to stop at (default: the newest).
        #[arg(long)]
        to: Option<i64>,
        /// Where backups go.
        #[arg(long, env = "GRADEBOOK_BACKUP_DIR", default_value = "data/backups")]
        backup_dir: PathBuf,
        /// Apply an irreversible migration without a backup.
        #[arg(long)]
        without_backup: bool,
    },
    /// Undo reversible migrations down to a version.
    Down {
        /// The version to go down to.
        #[arg(long)]
        to: i64,
    },
    /// Take a backup (and its manifest) into the backup directory.
    Backup {
        /// Where backups go.
        #[arg(long, env = "GRADEBOOK_BACKUP_DIR", default_value = "data/backups")]
        backup_dir: PathBuf,
    },
    /// Replace the database with a backup of it, saying first what is lost.
    Restore {
        /// The backup (or its `.json` manifest).
        #[arg(long)]
        from: PathBuf,
        /// Restore: without it, only say what restoring would undo.
        #[arg(long)]
        yes: bool,
    },
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z), in
/// microseconds since the epoch.
const LAST_WRITABLE_MICROS: i64 = 253_402_300_799_000_000;

/// A time in microseconds since the epoch, as RFC 3339 (the number itself
/// when it is out of RFC 3339's range: a corrupt record must not stop
/// `status`).
fn time(micros: i64) -> String {
    if !(0..=LAST_WRITABLE_MICROS).contains(&micros) {
        return format!("{micros} µs after the epoch (out of range)");
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn kind(migration: &Migration) -> String {
    format!(
        "{:<8}  {:<12}",
        migration.phase.as_str(),
        if migration.reversible() {
            "reversible"
        } else {
            "irreversible"
        }
    )
}

/// The lines of `gradebook migrate status`.
fn status_lines(database: &DatabaseConfig, status: &Status) -> Vec<String> {
    let mut lines = vec![format!(
        "database {} (id {})",
        database.describe(),
        status.database_id.as_deref().unwrap_or("not given yet")
    )];
    let version = status.recorded.version;
    lines.push(format!(
        "schema version {version}; this binary knows {}",
        status.known.len()
    ));
    let recorded =
        |v: i64| -> Option<&Applied> { status.recorded.history.iter().find(|a| a.version == v) };
    for migration in status.known {
        let state = match recorded(migration.version) {
            Some(applied) if applied.checksum != migration.checksum() => {
                "applied, but DIFFERENT from this binary's (checksum)".to_owned()
            }
            Some(applied) => format!("applied {}", time(applied.applied_at)),
            None if migration.version <= version => "applied (before checksums)".to_owned(),
            None => "pending".to_owned(),
        };
        lines.push(format!(
            "  {:>3}  {:<56}  {}  {state}",
            migration.version,
            migration.name,
            kind(migration)
        ));
    }
    for applied in status
        .recorded
        .history
        .iter()
        .filter(|a| a.version > status.known.len() as i64)
    {
        lines.push(format!(
            "  {:>3}  {:<56}  (newer than this binary; binaries of version {} on can use it)",
            applied.version, applied.name, applied.compatible_from
        ));
    }
    lines.push(match &status.compatibility {
        Ok(Compatibility::Current) => "up to date".to_owned(),
        Ok(Compatibility::Behind { .. }) => {
            "pending migrations: a binary applies expand migrations itself when it starts; \
             contract ones wait for `gradebook migrate up`, to run once every instance runs this release"
                .to_owned()
        }
        Ok(Compatibility::Newer { found }) => {
            format!("version {found} is newer than this binary, which can still use it")
        }
        Err(error) => format!("error: {error}"),
    });
    lines
}

fn plan_lines(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|step| {
            let verb = match step.direction {
                Direction::Up => "applied",
                Direction::Down => "undone",
            };
            format!(
                "{verb} {} ({}, {}): now at version {}",
                step.migration.version,
                step.migration.name,
                step.migration.phase.as_str(),
                step.version_after()
            )
        })
        .collect()
}

/// Runs `gradebook migrate`.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let database = DatabaseConfig::new(args.database_url.as_deref(), &args.data_dir)?;
    match args.action {
        Action::Status => {
            let status = tool::status(&database).await?;
            for line in status_lines(&database, &status) {
                println!("{line}");
            }
            if let Err(error) = status.compatibility {
                bail!("{error}");
            }
        }
        Action::Up {
            to,
            backup_dir,
            without_backup,
        } => {
            let backups = (!without_backup).then_some(backup_dir.as_path());
            let migrated = tool::up(&database, to, backups).await?;
            if let Some((path, manifest)) = &migrated.backup {
                println!(
                    "backup taken first (an irreversible migration follows): {} ({} students, {} grades, schema version {})",
                    path.display(),
                    manifest.students.len(),
                    manifest.grades.len(),
                    manifest.schema_version
                );
            } else if without_backup
                && migrated
                    .plan
                    .steps
                    .iter()
                    .any(|s| !s.migration.reversible())
            {
                println!("no backup taken (--without-backup)");
            }
            for line in plan_lines(&migrated.plan) {
                println!("{line}");
            }
            if migrated.plan.is_empty() {
                println!("nothing to do: the schema is up to date");
            }
        }
        Action::Down { to } => {
            let plan = tool::down(&database, to).await?;
            for line in plan_lines(&plan) {
                println!("{line}");
            }
        }
        Action::Backup { backup_dir } => {
            let (path, manifest) = tool::backup(&database, &backup_dir).await?;
            println!(
                "backup {} ({} students, {} grades, schema version {}, taken {})",
                path.display(),
                manifest.students.len(),
                manifest.grades.len(),
                manifest.schema_version,
                time(manifest.taken_at)
            );
        }
        Action::Restore { from, yes } => {
            let restore = tool::prepare_restore(&database, &from).await?;
            println!(
                "the backup {} was taken {} at schema version {}: {} students, {} grades",
                restore.backup.display(),
                time(restore.manifest.taken_at),
                restore.manifest.schema_version,
                restore.manifest.students.len(),
                restore.manifest.grades.len()
            );
            println!(
                "restoring it loses what was written since: {}",
                restore.loss
            );
            if !yes {
                bail!("nothing changed: pass --yes to restore");
            }
            tool::restore(&database, &restore).await?;
            println!(
                "restored: the database is as it was at {} (schema version {})",
                time(restore.manifest.taken_at),
                restore.manifest.schema_version
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_out_of_range_print_as_numbers() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(253_402_300_799_000_000), "9999-12-31T23:59:59Z");
        assert!(time(i64::MAX).contains("out of range"));
        assert!(time(-1).contains("out of range"));
    }
}
