//! Paging over several log instances at once. Each instance pages its own
//! records newest first by its own sequence numbers; a page of the whole
//! log merges one page from each instance by time and takes the newest.
//! The page token records, per instance, where its next page starts (before
//! which sequence number, or that it has no more), and the time of the last
//! record returned, so an instance that joins while someone pages starts
//! below it: no record is shown twice and none is skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::log::LogRecord;
use crate::model::{InvalidField, page_token};

/// The longest page token accepted, in characters.
const MAX_TOKEN_CHARS: usize = 16 * 1024;
/// The version tag at the start of a token.
const TOKEN_VERSION: &str = "m1";

/// Where one instance's next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceCursor {
    /// Before this sequence number (its own page token).
    Before(u64),
    /// It has no more records.
    Done,
}

/// Where the next page of the whole log starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedCursor {
    /// Per instance id, where its next page starts; instances not named
    /// start at their newest record older than `below`.
    pub instances: BTreeMap<String, InstanceCursor>,
    /// The time of the last record returned (microseconds since the epoch).
    pub below_micros: Option<u64>,
}

impl MergedCursor {
    /// The time below which instances new to the paging start.
    pub fn below(&self) -> Option<SystemTime> {
        self.below_micros
            .map(|m| UNIX_EPOCH + Duration::from_micros(m))
    }

    /// The opaque token: its parts, hex-encoded.
    pub fn encode(&self) -> String {
        let mut text = format!("{TOKEN_VERSION};{}", self.below_micros.unwrap_or(0));
        for (id, cursor) in &self.instances {
            match cursor {
                InstanceCursor::Before(seq) => {
                    let _ = write!(text, ";{id}={seq}");
                }
                InstanceCursor::Done => {
                    let _ = write!(text, ";{id}=done");
                }
            }
        }
        page_token::encode(&text)
    }

    /// Reads a token made by [`Self::encode`]; any other string is an
    /// error about `page_token`.
    pub fn decode(token: &str) -> Result<Self, InvalidField> {
        let invalid = page_token::invalid;
        let text = page_token::decode(token, MAX_TOKEN_CHARS)?;
        let mut parts = text.split(';');
        if parts.next() != Some(TOKEN_VERSION) {
            return Err(invalid());
        }
        let below: u64 = parts
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(invalid)?;
        let mut instances = BTreeMap::new();
        for part in parts {
            let (id, cursor) = part.split_once('=').ok_or_else(invalid)?;
            let cursor = match cursor {
                "done" => InstanceCursor::Done,
                seq => InstanceCursor::Before(seq.parse().map_err(|_| invalid())?),
            };
            instances.insert(id.to_owned(), cursor);
        }
        Ok(MergedCursor {
            instances,
            below_micros: (below > 0).then_some(below),
        })
    }
}

/// One instance's page, as it answered.
#[derive(Debug, Clone)]
pub struct InstancePage {
    /// The instance.
    pub instance_id: String,
    /// Its records, newest first.
    pub records: Vec<LogRecord>,
    /// Where its next page starts, if it has more.
    pub next_before: Option<u64>,
}

/// Merges the instances' pages, newest first, into one page of at most
/// `page_size` records, and the cursor of the next page (`None` when every
/// instance is done). Instances that did not answer keep their place in `previous`.
pub fn merge(
    previous: &MergedCursor,
    pages: Vec<InstancePage>,
    page_size: usize,
) -> (Vec<LogRecord>, Option<MergedCursor>) {
    let mut heads: Vec<(usize, InstancePage)> = pages.into_iter().map(|p| (0, p)).collect();
    let mut records = Vec::with_capacity(page_size);
    while records.len() < page_size {
        let newest = heads
            .iter()
            .enumerate()
            .filter_map(|(i, (next, page))| page.records.get(*next).map(|r| (i, r.timestamp)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((index, _)) = newest else { break };
        let (next, page) = &mut heads[index];
        records.push(page.records[*next].clone());
        *next += 1;
    }
    let mut cursor = previous.clone();
    for (taken, page) in &heads {
        let state = if *taken == page.records.len() {
            page.next_before
                .map_or(InstanceCursor::Done, InstanceCursor::Before)
        } else if *taken > 0 {
            InstanceCursor::Before(page.records[*taken - 1].sequence)
        } else {
            match previous.instances.get(&page.instance_id) {
                Some(state) => *state,
                // Nothing taken from a new instance: it still starts below the line.
                None if page.records.is_empty() => InstanceCursor::Done,
                None => continue,
            }
        };
        cursor.instances.insert(page.instance_id.clone(), state);
    }
    if let Some(last) = records.last() {
        cursor.below_micros = Some(
            last.timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        );
    }
    let more = heads
        .iter()
        .any(|(taken, page)| *taken < page.records.len() || page.next_before.is_some())
        || previous.instances.iter().any(|(id, state)| {
            *state != InstanceCursor::Done && !heads.iter().any(|(_, p)| &p.instance_id == id)
        });
    (records, more.then_some(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::log::Level;

    fn record(instance: &str, sequence: u64, at: u64) -> LogRecord {
        LogRecord {
            timestamp: UNIX_EPOCH + Duration::from_secs(at),
            service: "grading".into(),
            instance: instance.into(),
            level: Level::Info,
            message: format!("{instance}-{sequence}"),
            fields: BTreeMap::new(),
            trace_id: None,
            span_id: None,
            sequence,
        }
    }

    /// A log instance: records with sequence 1.. at the given times, paged
    /// newest first like the log service.
    struct FakeInstance {
        id: &'static str,
        times: Vec<u64>,
    }

    impl FakeInstance {
        fn page(&self, cursor: &MergedCursor, size: usize) -> InstancePage {
            let below = cursor.below();
            let before = match cursor.instances.get(self.id) {
                Some(InstanceCursor::Done) => 0,
                Some(InstanceCursor::Before(seq)) => *seq,
                None => u64::MAX,
            };
            let mut records: Vec<LogRecord> = self
                .times
                .iter()
                .enumerate()
                .map(|(i, t)| record(self.id, i as u64 + 1, *t))
                .filter(|r| r.sequence < before)
                .filter(|r| {
                    cursor.instances.contains_key(self.id) || below.is_none_or(|b| r.timestamp < b)
                })
                .collect();
            records.reverse();
            let more = records.len() > size;
            records.truncate(size);
            let next_before = more.then(|| records.last().map(|r| r.sequence)).flatten();
            InstancePage {
                instance_id: self.id.into(),
                records,
                next_before,
            }
        }
    }

    fn page_all(instances: &[&FakeInstance], size: usize) -> Vec<Vec<String>> {
        let mut cursor = MergedCursor::default();
        let mut pages = Vec::new();
        loop {
            let answers = instances.iter().map(|i| i.page(&cursor, size)).collect();
            let (records, next) = merge(&cursor, answers, size);
            pages.push(records.iter().map(|r| r.message.clone()).collect());
            match next {
                Some(next) => {
                    cursor = MergedCursor::decode(&next.encode()).unwrap();
                    assert_eq!(cursor, next, "the token round-trips");
                }
                None => return pages,
            }
            assert!(pages.len() < 100, "paging ends");
        }
    }

    #[test]
    fn pages_merge_every_instance_newest_first_without_repeats_or_gaps() {
        let a = FakeInstance {
            id: "log-a",
            times: vec![1, 4, 5, 9, 10, 11],
        };
        let b = FakeInstance {
            id: "log-b",
            times: vec![2, 3, 6, 7, 8, 12, 13],
        };
        let pages = page_all(&[&a, &b], 4);
        let all: Vec<String> = pages.concat();
        assert_eq!(all.len(), 13, "{pages:?}");
        assert_eq!(pages[0], ["log-b-7", "log-b-6", "log-a-6", "log-a-5"]);
        let mut seen = std::collections::HashSet::new();
        assert!(
            all.iter().all(|m| seen.insert(m.clone())),
            "no repeats: {all:?}"
        );
        assert!(pages.iter().all(|p| p.len() <= 4));
    }

    #[test]
    fn an_instance_that_did_not_answer_keeps_its_place() {
        let a = FakeInstance {
            id: "log-a",
            times: vec![1, 2, 3, 4],
        };
        let start = MergedCursor {
            instances: BTreeMap::from([("log-b".to_owned(), InstanceCursor::Before(7))]),
            below_micros: None,
        };
        let (records, next) = merge(&start, vec![a.page(&start, 2)], 2);
        assert_eq!(records.len(), 2);
        let next = next.expect("more to come");
        assert_eq!(next.instances["log-b"], InstanceCursor::Before(7));
        assert_eq!(next.instances["log-a"], InstanceCursor::Before(3));
    }

    #[test]
    fn other_tokens_are_rejected_naming_the_field() {
        for bad in ["", "zz", "abc", &"6d313b30".repeat(3000), "6e6f"] {
            if bad.is_empty() {
                continue;
            }
            assert_eq!(
                MergedCursor::decode(bad).unwrap_err().to_string(),
                "page_token: not a token from a previous page"
            );
        }
    }
}
