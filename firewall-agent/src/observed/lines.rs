//! The log lines `suggest` and `report` read: files (plain or gzip, told apart by their magic
//! bytes, not their name) and `-` for standard input, one JSON object per line.
//!
//! Only `violation` and `flow` lines are records. Other lines the agent prints on stdout
//! (`events_lost`, any other `type`) and its diagnostics when they are mixed in (tracing's JSON:
//! `level`, `fields`) are skipped and counted; a line that is not JSON at all, or a record that
//! does not have the documented shape, is an error naming the input and line, unless the caller
//! is lenient (then it is counted as bad and skipped).
use std::{
    io::{BufRead, BufReader, IsTerminal as _, Read},
    path::{Path, PathBuf},
};

use firewall_common::Side;
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::events::format::Peer;

/// gzip's magic bytes (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Progress goes to a terminal every this many lines (a counter test per line: cheap).
const PROGRESS_EVERY: u64 = 1 << 20;

/// Why the inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("reading {name}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}:{line}: not a JSON line: {source} (--lenient skips such lines)")]
    NotJson {
        name: String,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("{name}:{line}: malformed {kind} line: {source} (--lenient skips such lines)")]
    BadRecord {
        name: String,
        line: u64,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a line says happened to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// A flow line: every side allowed it.
    Allowed,
    /// A violation in monitor mode: it passed.
    Audit,
    /// A violation in enforce mode: it was dropped.
    Denied,
}

impl Verdict {
    /// Every verdict, in the order the report shows them.
    pub const ALL: [Verdict; 3] = [Verdict::Allowed, Verdict::Audit, Verdict::Denied];

    /// The log's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "ALLOWED",
            Verdict::Audit => "AUDIT",
            Verdict::Denied => "DENIED",
        }
    }
}

/// A `violation` or a `flow` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Violation,
    Flow,
}

/// One side that denied the connection (the `sides` field).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SideEntry {
    #[serde(deserialize_with = "side")]
    pub side: Side,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
}

/// A violation or flow line. Fields the agent adds later are ignored, so an older reader keeps
/// working on a newer log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 UTC with microseconds, as the agent writes it (so text order is time order).
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: RecordKind,
    pub verdict: Verdict,
    /// The side that dropped the connection, else the first that denied (violations).
    #[serde(default, deserialize_with = "opt_side")]
    pub direction: Option<Side>,
    #[serde(default)]
    pub node: Option<String>,
    pub protocol: String,
    pub src: Peer,
    pub dst: Peer,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default = "one")]
    pub count: u64,
    /// Every side that denied (violations, when the agent writes it).
    #[serde(default)]
    pub sides: Option<Vec<SideEntry>>,
}

fn one() -> u64 {
    1
}

fn side<'de, D: Deserializer<'de>>(d: D) -> Result<Side, D::Error> {
    let s = String::deserialize(d)?;
    Side::from_name(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("unknown side {s:?}: expected egress or ingress"))
    })
}

fn opt_side<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Side>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => Side::from_name(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown direction {s:?}: expected egress or ingress"
            ))
        }),
    }
}

/// What the inputs held, for the summary on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Non-empty lines read.
    pub lines: u64,
    /// Violation and flow lines.
    pub records: u64,
    /// Other lines of the agent's stdout (`events_lost`, other types, other JSON).
    pub other: u64,
    /// Diagnostics (tracing JSON) mixed into the log.
    pub diagnostics: u64,
    /// Lines skipped as unreadable (only with `lenient`).
    pub bad: u64,
}

/// What one line is.
enum Line {
    Record(Box<LogRecord>),
    Other,
    Diagnostic,
}

fn classify(bytes: &[u8], name: &str, line: u64) -> Result<Line, LineError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| LineError::NotJson {
        name: name.to_owned(),
        line,
        source,
    })?;
    let Some(obj) = value.as_object() else {
        return Ok(Line::Other);
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some(kind @ ("violation" | "flow")) => kind.to_owned(),
        Some(_) => return Ok(Line::Other),
        None if obj.contains_key("level") || obj.contains_key("fields") => {
            return Ok(Line::Diagnostic);
        }
        None => return Ok(Line::Other),
    };
    serde_json::from_value(value)
        .map(|r| Line::Record(Box::new(r)))
        .map_err(|source| LineError::BadRecord {
            name: name.to_owned(),
            line,
            kind,
            source,
        })
}

/// Reads every input in order and hands each record to `sink`.
pub fn read_inputs(
    paths: &[PathBuf],
    lenient: bool,
    mut sink: impl FnMut(LogRecord),
) -> Result<ReadStats, LineError> {
    let mut stats = ReadStats::default();
    let progress = std::io::stderr().is_terminal();
    for p in paths {
        let (name, raw): (String, Box<dyn Read>) = if p == Path::new("-") {
            ("<stdin>".to_owned(), Box::new(std::io::stdin().lock()))
        } else {
            let f = std::fs::File::open(p).map_err(|source| LineError::Io {
                name: p.display().to_string(),
                source,
            })?;
            (p.display().to_string(), Box::new(f))
        };
        let io = |source| LineError::Io {
            name: name.clone(),
            source,
        };
        let mut reader = BufReader::new(raw);
        let gzip = reader.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
        let mut reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(MultiGzDecoder::new(reader)))
        } else {
            Box::new(reader)
        };
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                break;
            }
            number += 1;
            if progress && number.is_multiple_of(PROGRESS_EVERY) {
                eprint!("\r{name}: {number} lines");
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            stats.lines += 1;
            match classify(&buf, &name, number) {
                Ok(Line::Record(r)) => {
                    stats.records += 1;
                    sink(*r);
                }
                Ok(Line::Other) => stats.other += 1,
                Ok(Line::Diagnostic) => stats.diagnostics += 1,
                Err(e) if lenient => {
                    tracing::debug!("{e}");
                    stats.bad += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if progress && number >= PROGRESS_EVERY {
            eprintln!("\r{name}: {number} lines");
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const VIOLATION: &str = r#"{"ts":"2026-11-23T04:00:00.123456Z","type":"violation","verdict":"AUDIT","direction":"egress","node":"node-1","protocol":"TCP","src":{"namespace":"web","pod":"web-5d9c","ip":"10.244.1.5","port":43122},"dst":{"namespace":"db","pod":"postgres-0","ip":"10.244.2.9","port":5432},"policy":"NamespaceFirewall/db/default","count":1}"#;

    fn read_text(text: &[u8], lenient: bool) -> Result<(ReadStats, Vec<LogRecord>), LineError> {
        let dir = std::env::temp_dir().join(format!("bulkhead-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.log", text.len()));
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let r = read_inputs(std::slice::from_ref(&path), lenient, |r| out.push(r));
        std::fs::remove_file(&path).unwrap();
        r.map(|s| (s, out))
    }

    #[test]
    fn reads_the_documented_violation_line() {
        let (stats, recs) = read_text(VIOLATION.as_bytes(), false).unwrap();
        assert_eq!(stats.records, 1);
        let r = &recs[0];
        assert_eq!(r.kind, RecordKind::Violation);
        assert_eq!(r.verdict, Verdict::Audit);
        assert_eq!(r.direction, Some(Side::Egress));
        assert_eq!(r.dst.namespace.as_deref(), Some("db"));
        assert_eq!(r.dst.port, Some(5432));
        assert_eq!(r.sides, None);
    }

    #[test]
    fn accepts_sides_and_flow_lines() {
        let text = concat!(
            r#"{"ts":"2026-11-23T04:00:00.000001Z","type":"violation","verdict":"DENIED","direction":"ingress","node":"n","protocol":"UDP","src":{"namespace":"a","pod":null,"ip":"10.0.0.1","port":1},"dst":{"namespace":"b","pod":"p","ip":"10.0.0.2","port":53},"policy":"default","count":2,"sides":[{"side":"egress","namespace":"a","mode":"monitor","policy":"default"},{"side":"ingress","namespace":"b","mode":"enforce","policy":"default"}]}"#,
            "\n",
            r#"{"ts":"2026-11-23T04:00:00.000002Z","type":"flow","verdict":"ALLOWED","direction":"egress","node":"n","protocol":"TCP","src":{"namespace":"a","pod":"x","ip":"10.0.0.1","port":2},"dst":{"namespace":null,"pod":null,"ip":"1.1.1.1","port":443},"policy":"default","count":1}"#,
            "\n"
        );
        let (stats, recs) = read_text(text.as_bytes(), false).unwrap();
        assert_eq!(stats.records, 2);
        let sides = recs[0].sides.as_ref().unwrap();
        assert_eq!(sides[1].side, Side::Ingress);
        assert_eq!(sides[1].mode.as_deref(), Some("enforce"));
        assert_eq!(recs[1].kind, RecordKind::Flow);
        assert_eq!(recs[1].verdict, Verdict::Allowed);
    }

    #[test]
    fn skips_other_stdout_lines_and_diagnostics() {
        let text = format!(
            "{VIOLATION}\n\n{}\n{}\n{}\n",
            r#"{"ts":"2026-11-23T04:00:01.000000Z","type":"events_lost","node":"node-1","count":12}"#,
            r#"{"timestamp":"2026-11-23T04:00:01Z","level":"INFO","fields":{"message":"applied"},"target":"firewall_agent"}"#,
            r#"{"timestamp":"2026-11-23T04:00:01Z","level":"WARN","message":"flattened","target":"x"}"#,
        );
        let (stats, recs) = read_text(text.as_bytes(), false).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(
            stats,
            ReadStats {
                lines: 4,
                records: 1,
                other: 1,
                diagnostics: 2,
                bad: 0
            }
        );
    }

    #[test]
    fn a_line_that_is_not_json_names_input_and_line_unless_lenient() {
        let text = format!("{VIOLATION}\nagent starting...\n{VIOLATION}\n");
        let e = read_text(text.as_bytes(), false).unwrap_err().to_string();
        assert!(e.contains(".log:2: not a JSON line"), "{e}");
        let (stats, recs) = read_text(text.as_bytes(), true).unwrap();
        assert_eq!((stats.bad, recs.len()), (1, 2));
    }

    #[test]
    fn a_malformed_record_is_an_error() {
        let text = r#"{"ts":"x","type":"violation","verdict":"MAYBE"}"#;
        let e = read_text(text.as_bytes(), false).unwrap_err().to_string();
        assert!(e.contains(":1: malformed violation line"), "{e}");
    }

    #[test]
    fn gzip_is_told_by_its_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        writeln!(gz, "{VIOLATION}").unwrap();
        let mut bytes = gz.finish().unwrap();
        // Two members, as `cat a.gz b.gz` makes.
        let again = bytes.clone();
        bytes.extend(again);
        let (stats, recs) = read_text(&bytes, false).unwrap();
        assert_eq!((stats.records, recs.len()), (2, 2));
    }
}
