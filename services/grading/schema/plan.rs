//! What to do to a database's schema, decided from the binary's
//! migrations and what the database records, without touching it: whether
//! this binary may use the database at all ([`check`]), what it applies
//! itself when it opens it ([`at_open`]), and what `gradebook migrate up`
//! and `down` do ([`up`], [`down`]). Every refusal is decided here, before
//! anything changes.

use crate::grading::schema::{Applied, Migration, Phase};

/// What a database records of its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Its schema version (0: no schema yet).
    pub version: i64,
    /// The migrations recorded with their checksums, by version. A
    /// database migrated before checksums were recorded lacks its first
    /// ones until a binary writes to it: those are not checked.
    pub history: Vec<Applied>,
}

/// Why a schema cannot be used or changed as asked. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The database is newer than this binary and needs newer binaries.
    #[error(
        "the database has schema version {found}, which binaries of schema version \
         {compatible_from} or later can use; this one knows version {supported}: run a newer gradebook"
    )]
    TooNew {
        /// The database's version.
        found: i64,
        /// The oldest schema version whose binaries can use it.
        compatible_from: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// A migration applied to the database is not this binary's.
    #[error(
        "migration {version} ({name}) differs from the one applied to this database \
         (checksum {recorded} recorded, {expected} in this binary): was it edited? nothing changed"
    )]
    ChecksumMismatch {
        /// Its version.
        version: i64,
        /// Its name in this binary.
        name: String,
        /// The checksum recorded, shortened.
        recorded: String,
        /// This binary's, shortened.
        expected: String,
    },
    /// A `--to` that is not a version this direction can reach.
    #[error("--to {to}: {why}")]
    Target {
        /// The version asked for.
        to: i64,
        /// Why not.
        why: String,
    },
    /// A `down` through a migration that cannot be undone.
    #[error(
        "migration {version} ({name}) is irreversible: restore a backup taken before it \
         (gradebook migrate restore --from FILE) instead; nothing changed"
    )]
    Irreversible {
        /// Its version.
        version: i64,
        /// Its name.
        name: String,
    },
}

/// How this binary stands with a database's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    /// The database has this binary's newest version.
    Current,
    /// The database is older: `pending` migrations are to be applied.
    Behind {
        /// How many.
        pending: usize,
    },
    /// The database is newer than this binary, which can still use it
    /// (every newer migration keeps it working).
    Newer {
        /// The database's version.
        found: i64,
    },
}

/// Which way a step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Applying a migration.
    Up,
    /// Undoing one.
    Down,
}

/// One migration to apply or undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The migration.
    pub migration: Migration,
    /// Which way.
    pub direction: Direction,
}

impl Step {
    /// The SQL to run.
    pub fn sql(&self) -> &'static str {
        match self.direction {
            Direction::Up => self.migration.up,
            // A down step is only planned for a reversible migration.
            Direction::Down => self.migration.down.unwrap_or(""),
        }
    }

    /// The schema version once the step is done.
    pub fn version_after(&self) -> i64 {
        match self.direction {
            Direction::Up => self.migration.version,
            Direction::Down => self.migration.version - 1,
        }
    }
}

/// What to do, in order, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
    /// Whether a backup must be taken first: an irreversible migration is
    /// applied to a database that already has a schema (and so may have
    /// data).
    pub needs_backup: bool,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

fn short(checksum: &str) -> String {
    checksum.chars().take(12).collect()
}

/// Whether this binary (knowing `known`) may use the database: refused
/// when a recorded checksum differs from the binary's, or when the
/// database is newer and one of its newer migrations needs newer binaries.
pub fn check(known: &[Migration], recorded: &Recorded) -> Result<Compatibility, SchemaError> {
    let supported = known.len() as i64;
    for applied in &recorded.history {
        let Some(migration) = known.iter().find(|m| m.version == applied.version) else {
            continue;
        };
        let expected = migration.checksum();
        if applied.checksum != expected {
            return Err(SchemaError::ChecksumMismatch {
                version: applied.version,
                name: migration.name.to_owned(),
                recorded: short(&applied.checksum),
                expected: short(&expected),
            });
        }
    }
    if recorded.version > supported {
        let compatible_from = recorded
            .history
            .iter()
            .filter(|applied| applied.version > supported)
            .map(|applied| applied.compatible_from)
            .max()
            // Newer migrations without a record: assume the worst.
            .unwrap_or(recorded.version);
        return if compatible_from <= supported {
            Ok(Compatibility::Newer {
                found: recorded.version,
            })
        } else {
            Err(SchemaError::TooNew {
                found: recorded.version,
                compatible_from,
                supported,
            })
        };
    }
    let pending = (supported - recorded.version.max(0)) as usize;
    Ok(if pending == 0 {
        Compatibility::Current
    } else {
        Compatibility::Behind { pending }
    })
}

/// The migrations after `from` up to `to`, in order.
fn pending(known: &[Migration], from: i64, to: i64) -> Vec<Step> {
    known
        .iter()
        .filter(|m| m.version > from && m.version <= to)
        .map(|&migration| Step {
            migration,
            direction: Direction::Up,
        })
        .collect()
}

/// What a binary applies itself when it opens the database: everything
/// for a new database; nothing for one below `tolerant_from` (binaries
/// older than that version, which may still run on it, would refuse
/// it once changed); otherwise the pending expand migrations, up to the
/// first contract one (which waits for `gradebook migrate up`).
pub fn at_open(
    known: &[Migration],
    recorded: &Recorded,
    tolerant_from: i64,
) -> Result<Plan, SchemaError> {
    check(known, recorded)?;
    if recorded.version > 0 && recorded.version < tolerant_from {
        return Ok(Plan::default());
    }
    let mut steps = pending(known, recorded.version, known.len() as i64);
    if recorded.version > 0
        && let Some(first_contract) = steps
            .iter()
            .position(|step| step.migration.phase == Phase::Contract)
    {
        steps.truncate(first_contract);
    }
    Ok(Plan {
        steps,
        needs_backup: false,
    })
}

/// What `gradebook migrate up` does: every pending migration up to `to`
/// (the newest when `None`), with a backup first when one of them is
/// irreversible and the database already has a schema.
pub fn up(known: &[Migration], recorded: &Recorded, to: Option<i64>) -> Result<Plan, SchemaError> {
    check(known, recorded)?;
    let newest = known.len() as i64;
    if to.is_none() && recorded.version >= newest {
        // Up to date, or newer than this binary: nothing to apply.
        return Ok(Plan::default());
    }
    let to = to.unwrap_or(newest);
    if to > newest {
        return Err(SchemaError::Target {
            to,
            why: format!("this binary knows versions up to {newest}"),
        });
    }
    if to < recorded.version {
        return Err(SchemaError::Target {
            to,
            why: format!(
                "the database is at version {}: going down is `gradebook migrate down --to {to}`",
                recorded.version
            ),
        });
    }
    let steps = pending(known, recorded.version, to);
    let needs_backup = recorded.version > 0 && steps.iter().any(|s| !s.migration.reversible());
    Ok(Plan {
        steps,
        needs_backup,
    })
}

/// What `gradebook migrate down --to TO` does: undoes the migrations above
/// `to`, newest first; refused when one of them is irreversible.
pub fn down(known: &[Migration], recorded: &Recorded, to: i64) -> Result<Plan, SchemaError> {
    check(known, recorded)?;
    if recorded.version > known.len() as i64 {
        return Err(SchemaError::Target {
            to,
            why: format!(
                "the database is at version {}, newer than this binary's {}: run the newer binary's migrate down",
                recorded.version,
                known.len()
            ),
        });
    }
    if to < 0 || to >= recorded.version {
        return Err(SchemaError::Target {
            to,
            why: format!(
                "the database is at version {}: going down means a version below it, from 0",
                recorded.version
            ),
        });
    }
    let mut steps = Vec::new();
    for migration in known
        .iter()
        .rev()
        .filter(|m| m.version > to && m.version <= recorded.version)
    {
        if !migration.reversible() {
            return Err(SchemaError::Irreversible {
                version: migration.version,
                name: migration.name.to_owned(),
            });
        }
        steps.push(Step {
            migration: *migration,
            direction: Direction::Down,
        });
    }
    Ok(Plan {
        steps,
        needs_backup: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grading::schema::check_list;

    const KNOWN: [Migration; 4] = [
        Migration {
            version: 1,
            name: "tables",
            phase: Phase::Expand,
            up: "CREATE TABLE a (x)",
            down: None,
            compatible_from: 1,
        },
        Migration {
            version: 2,
            name: "index",
            phase: Phase::Expand,
            up: "CREATE INDEX a_x ON a (x)",
            down: Some("DROP INDEX a_x"),
            compatible_from: 1,
        },
        Migration {
            version: 3,
            name: "round",
            phase: Phase::Contract,
            up: "UPDATE a SET x = round(x)",
            down: None,
            compatible_from: 2,
        },
        Migration {
            version: 4,
            name: "column",
            phase: Phase::Expand,
            up: "ALTER TABLE a ADD COLUMN y DEFAULT 0",
            down: Some("ALTER TABLE a DROP COLUMN y"),
            compatible_from: 3,
        },
    ];

    fn at(version: i64) -> Recorded {
        Recorded {
            version,
            history: KNOWN
                .iter()
                .filter(|m| m.version <= version)
                .map(|m| Applied::of(m, 0))
                .collect(),
        }
    }

    fn versions(plan: &Plan) -> Vec<i64> {
        plan.steps.iter().map(|s| s.migration.version).collect()
    }

    #[test]
    fn the_test_list_is_well_formed() {
        assert_eq!(check_list(&KNOWN), Ok(()));
        let mut wrong = KNOWN;
        wrong[2].compatible_from = 4;
        assert!(check_list(&wrong).is_err());
        let mut expand_breaking = KNOWN;
        expand_breaking[1].compatible_from = 2;
        assert!(check_list(&expand_breaking).is_err());
    }

    #[test]
    fn a_new_database_gets_everything_at_open() {
        let plan = at_open(&KNOWN, &Recorded::default(), 1).unwrap();
        assert_eq!(versions(&plan), [1, 2, 3, 4]);
        assert!(!plan.needs_backup);
    }

    #[test]
    fn an_existing_database_gets_expands_up_to_the_first_contract_at_open() {
        let plan = at_open(&KNOWN, &at(1), 1).unwrap();
        assert_eq!(versions(&plan), [2]);
        // Past the contract, the next expand is applied.
        assert_eq!(versions(&at_open(&KNOWN, &at(3), 1).unwrap()), [4]);
        assert!(at_open(&KNOWN, &at(4), 1).unwrap().is_empty());
        // Below the first version whose binaries tolerate newer ones:
        // nothing, but a new database still gets everything.
        assert!(at_open(&KNOWN, &at(1), 2).unwrap().is_empty());
        assert!(
            at_open(&KNOWN, &at(2), 2).unwrap().is_empty(),
            "3 is a contract"
        );
        assert_eq!(versions(&at_open(&KNOWN, &at(3), 2).unwrap()), [4]);
        assert_eq!(
            at_open(&KNOWN, &Recorded::default(), 2)
                .unwrap()
                .steps
                .len(),
            4
        );
    }

    #[test]
    fn up_takes_a_backup_before_an_irreversible_migration_of_a_used_database() {
        let plan = up(&KNOWN, &at(2), None).unwrap();
        assert_eq!(versions(&plan), [3, 4]);
        assert!(plan.needs_backup);
        let plan = up(&KNOWN, &at(3), None).unwrap();
        assert_eq!(versions(&plan), [4]);
        assert!(!plan.needs_backup, "4 is reversible");
        assert!(!up(&KNOWN, &Recorded::default(), None).unwrap().needs_backup);
        assert_eq!(versions(&up(&KNOWN, &at(1), Some(2)).unwrap()), [2]);
        // Up to date, or newer than the binary: nothing.
        assert!(up(&KNOWN, &at(4), None).unwrap().is_empty());
        assert!(up(&KNOWN[..2], &at(3), None).unwrap().is_empty());
        assert!(matches!(
            up(&KNOWN, &at(3), Some(2)),
            Err(SchemaError::Target { to: 2, .. })
        ));
        assert!(matches!(
            up(&KNOWN, &at(3), Some(9)),
            Err(SchemaError::Target { to: 9, .. })
        ));
    }

    #[test]
    fn down_undoes_reversible_migrations_and_refuses_an_irreversible_one() {
        let plan = down(&KNOWN, &at(4), 3).unwrap();
        assert_eq!(versions(&plan), [4]);
        assert_eq!(plan.steps[0].sql(), "ALTER TABLE a DROP COLUMN y");
        assert_eq!(plan.steps[0].version_after(), 3);
        let refused = down(&KNOWN, &at(4), 1).unwrap_err();
        assert_eq!(
            refused,
            SchemaError::Irreversible {
                version: 3,
                name: "round".into()
            }
        );
        assert!(refused.to_string().contains("gradebook migrate restore"));
        assert!(matches!(
            down(&KNOWN, &at(2), 2),
            Err(SchemaError::Target { .. })
        ));
    }

    #[test]
    fn an_edited_migration_is_refused_before_anything() {
        let mut recorded = at(3);
        recorded.history[1].checksum = "0".repeat(64);
        for refused in [
            check(&KNOWN, &recorded).map(|_| Plan::default()),
            at_open(&KNOWN, &recorded, 1),
            up(&KNOWN, &recorded, None),
            down(&KNOWN, &recorded, 2),
        ] {
            let error = refused.unwrap_err();
            assert!(
                matches!(&error, SchemaError::ChecksumMismatch { version: 2, .. }),
                "{error}"
            );
            assert!(error.to_string().contains("checksum 000000000000 recorded"));
        }
    }

    #[test]
    fn a_newer_database_is_used_while_its_newer_migrations_allow() {
        let older = &KNOWN[..2];
        // Version 3 keeps binaries of version 2 working.
        assert_eq!(check(older, &at(3)), Ok(Compatibility::Newer { found: 3 }));
        // Version 4 needs binaries of version 3.
        assert_eq!(
            check(older, &at(4)),
            Err(SchemaError::TooNew {
                found: 4,
                compatible_from: 3,
                supported: 2
            })
        );
        // Without records of the newer migrations: refused.
        let bare = Recorded {
            version: 3,
            history: Vec::new(),
        };
        assert!(matches!(
            check(older, &bare),
            Err(SchemaError::TooNew { .. })
        ));
        assert_eq!(
            check(&KNOWN, &at(1)),
            Ok(Compatibility::Behind { pending: 3 })
        );
        assert_eq!(check(&KNOWN, &at(4)), Ok(Compatibility::Current));
    }
}
