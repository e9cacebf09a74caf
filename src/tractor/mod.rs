//! Tractor: job scripts mirroring publish graphs ([`script`]), the engine HTTP
//! client ([`client`]), and the bridge's record of which graph became which job
//! ([`JobRecords`]).

pub mod client;
pub mod script;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::error::{Classify, ErrorClass};

/// One mirrored graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The Tractor job id (0 while a spool is in flight).
    pub jid: u64,
    /// The job title.
    pub title: String,
    /// When it was spooled (ms since the epoch).
    pub spooled_at_ms: i64,
}

/// Why the record file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading or writing it failed.
    #[error("Tractor job records {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not valid JSON.
    #[error("Tractor job records {path} are corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

impl Classify for RecordError {
    fn class(&self) -> ErrorClass {
        match self {
            RecordError::Io { source, .. } => crate::error::io_class(source),
            RecordError::Corrupt { .. } => ErrorClass::Permanent,
        }
    }
}

/// graph id → Tractor job, in one JSON file replaced atomically on each change.
#[derive(Debug, Clone)]
pub struct JobRecords {
    path: PathBuf,
    map: BTreeMap<String, JobRecord>,
}

impl JobRecords {
    /// The record file named by `tractor.state_file` under the project root.
    pub fn path_for(settings: &Settings) -> PathBuf {
        settings.project.root.join(&settings.tractor.state_file)
    }

    /// Loads `path` (empty when it does not exist).
    pub fn load(path: &Path) -> Result<JobRecords, RecordError> {
        let map = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RecordError::Corrupt {
                path: path.into(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(RecordError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        Ok(JobRecords {
            path: path.into(),
            map,
        })
    }

    /// The record of a graph.
    pub fn get(&self, graph_id: &str) -> Option<&JobRecord> {
        self.map.get(graph_id)
    }

    /// Every record.
    pub fn all(&self) -> &BTreeMap<String, JobRecord> {
        &self.map
    }

    /// The graph mirrored as job `jid`.
    pub fn graph_of(&self, jid: u64) -> Option<&str> {
        self.map
            .iter()
            .find(|(_, r)| r.jid == jid)
            .map(|(g, _)| g.as_str())
    }

    /// Records (or replaces) a graph's job and makes it durable before returning.
    pub fn put(&mut self, graph_id: &str, rec: JobRecord) -> Result<(), RecordError> {
        self.map.insert(graph_id.to_string(), rec);
        let io = |source| RecordError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(&self.map).unwrap_or_default();
        let tmp = crate::store::unique_temp(dir, ".jobs");
        crate::store::replace_atomic(&self.path, &tmp, &bytes).map_err(io)
    }
}
