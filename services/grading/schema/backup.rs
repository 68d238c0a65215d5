//! What a backup of the grading database says about itself, in a manifest
//! beside it (`BACKUP.json`): which database it is of (its id, so that a
//! backup is never restored over another database), its engine and schema
//! version, when it was taken, and the ids of the students and grades it
//! holds, read in the same snapshot as the backup itself. From those ids,
//! [`Loss`] says exactly what a restore would undo, before it runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The manifest's format.
pub const MANIFEST_FORMAT: u32 = 1;

/// Why a backup's manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The manifest.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// It is not a manifest of ours.
    #[error("{path} is not a gradebook backup manifest: {why}")]
    Malformed {
        /// The manifest.
        path: String,
        /// Why.
        why: String,
    },
}

/// A backup's manifest. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// `sqlite` or `postgresql`.
    pub engine: String,
    /// The id of the database it is of.
    pub database_id: String,
    /// Its schema version.
    pub schema_version: i64,
    /// When its snapshot was taken, in microseconds since the Unix epoch.
    pub taken_at: i64,
    /// The backup's file name, beside the manifest.
    pub file: String,
    /// The ids of the students it holds, sorted.
    pub students: Vec<String>,
    /// The ids of the grades it holds, sorted.
    pub grades: Vec<String>,
}

impl Manifest {
    /// The manifest's path for the backup at `backup`.
    pub fn path_for(backup: &Path) -> PathBuf {
        let mut name = backup.as_os_str().to_owned();
        name.push(".json");
        PathBuf::from(name)
    }

    /// The backup file, beside the manifest at `manifest`.
    pub fn backup_path(&self, manifest: &Path) -> PathBuf {
        manifest
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.file)
    }

    /// When its snapshot was taken.
    pub fn taken_at_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.taken_at.max(0) as u64)
    }

    /// Writes it beside the backup at `backup`, durably.
    pub fn write(&self, backup: &Path) -> Result<PathBuf, ManifestError> {
        let path = Self::path_for(backup);
        let io = |error| ManifestError::Io {
            path: path.display().to_string(),
            error,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let file = std::fs::File::create(&path).map_err(io)?;
        std::io::Write::write_all(&mut &file, &text).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(path)
    }

    /// Reads the manifest of the backup `given` (the backup or its
    /// manifest); returns it with the manifest's path.
    pub fn read(given: &Path) -> Result<(Manifest, PathBuf), ManifestError> {
        let path = if given.extension().is_some_and(|e| e == "json") {
            given.to_owned()
        } else {
            Self::path_for(given)
        };
        let shown = path.display().to_string();
        let text = std::fs::read(&path).map_err(|error| ManifestError::Io {
            path: shown.clone(),
            error,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| ManifestError::Malformed {
                path: shown.clone(),
                why: e.to_string(),
            })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::Malformed {
                path: shown,
                why: format!(
                    "format {} (this binary reads {MANIFEST_FORMAT})",
                    manifest.format
                ),
            });
        }
        Ok((manifest, path))
    }
}

/// What restoring a backup undoes, from the ids it holds and the ids the
/// database holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loss {
    /// Students created since the backup: removed, with their grades.
    pub students_created: usize,
    /// Grades created since the backup: removed.
    pub grades_created: usize,
    /// Students deleted since: back again.
    pub students_deleted: usize,
    /// Grades deleted since: back again.
    pub grades_deleted: usize,
}

impl Loss {
    /// What restoring `manifest`'s backup undoes of a database holding
    /// `students` and `grades` now.
    pub fn of(manifest: &Manifest, students: &[String], grades: &[String]) -> Self {
        let (students_created, students_deleted) = difference(&manifest.students, students);
        let (grades_created, grades_deleted) = difference(&manifest.grades, grades);
        Loss {
            students_created,
            grades_created,
            students_deleted,
            grades_deleted,
        }
    }

    /// Whether the restore undoes no creation or deletion.
    pub fn is_nothing(&self) -> bool {
        *self == Loss::default()
    }
}

/// How many of `now` are not in `then`, and of `then` not in `now`.
fn difference(then: &[String], now: &[String]) -> (usize, usize) {
    let then: HashSet<&String> = then.iter().collect();
    let now: HashSet<&String> = now.iter().collect();
    (now.difference(&then).count(), then.difference(&now).count())
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} student(s) and {} grade(s) created since are removed; {} student(s) and {} grade(s) \
             deleted since come back; every other change since (renamed students, edited grades) is undone",
            self.students_created, self.grades_created, self.students_deleted, self.grades_deleted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            engine: "sqlite".into(),
            database_id: "db-1".into(),
            schema_version: 3,
            taken_at: 1_700_000_000_000_000,
            file: "grading-v3.sqlite".into(),
            students: vec!["s1".into(), "s2".into()],
            grades: vec!["g1".into(), "g2".into(), "g3".into()],
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_loss_counts_what_was_created_and_deleted_since() {
        let loss = Loss::of(
            &manifest(),
            &ids(&["s1", "s2", "s3"]),
            &ids(&["g1", "g4", "g5"]),
        );
        assert_eq!(
            loss,
            Loss {
                students_created: 1,
                grades_created: 2,
                students_deleted: 0,
                grades_deleted: 2
            }
        );
        assert!(loss.to_string().starts_with(
            "1 student(s) and 2 grade(s) created since are removed; 0 student(s) and 2 grade(s) deleted since come back"
        ));
        assert!(Loss::of(&manifest(), &ids(&["s1", "s2"]), &ids(&["g1", "g2", "g3"])).is_nothing());
    }

    #[test]
    fn a_manifest_is_written_and_read_beside_its_backup() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("grading-v3.sqlite");
        let path = manifest().write(&backup).unwrap();
        assert_eq!(path, dir.path().join("grading-v3.sqlite.json"));
        for given in [&backup, &path] {
            let (read, at) = Manifest::read(given).unwrap();
            assert_eq!(read, manifest());
            assert_eq!(read.backup_path(&at), backup);
        }
        std::fs::write(&path, b"{\"format\": 9}").unwrap();
        let error = Manifest::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("is not a gradebook backup manifest"),
            "{error}"
        );
        let missing = Manifest::read(&dir.path().join("nothing")).unwrap_err();
        assert!(matches!(missing, ManifestError::Io { .. }));
    }
}
