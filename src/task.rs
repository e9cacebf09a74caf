//! The task model: typed task messages and the publish graph. Pure data, no IO.
//!
//! A publish of one scanlist group (shot / scan / type / version) is a [`Graph`] of
//! [`TaskNode`]s with explicit edges. Each node's work is a [`Step`], a tagged enum
//! serialised as JSON; on the wire a node travels as a [`TaskMessage`] carrying the
//! schema version, the graph and task ids, the attempt number and the step.
//!
//! Ids are deterministic: the same row and version always give the same graph id
//! and the same task ids, so a re-submitted publish is recognised, and every step
//! can use its task id as an idempotency key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the [`TaskMessage`] JSON schema this code speaks. A worker refuses
/// (dead-letters) messages outside [`MIN_SCHEMA_VERSION`]`..=SCHEMA_VERSION`.
///
/// - 1: the first schema.
/// - 2: `copy` may carry `frames` (a movie plate published as frames). A message
///   is sent as the lowest version that can express it ([`Step::schema`]), so a
///   worker that speaks only 1 still runs everything else, and dead-letters a
///   frames copy ("upgrade the worker") instead of ignoring the field.
/// - 3: a message may carry `retries_from` (the task was given a fresh round of
///   retries: `iom dlq requeue --reset-attempt`, `iom resume --retry-failed`, a
///   retry in Tractor); only such messages are sent as 3.
pub const SCHEMA_VERSION: u32 = 3;

/// The oldest [`TaskMessage`] schema this code still reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// The kinds of step, one work queue each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Check the source frames: existence, sizes, gap policy, checksums.
    Probe,
    /// Copy the plates into the publish layout, renumbered from 1001.
    Copy,
    /// Thumbnail of the published plate.
    Thumbnail,
    /// JPEG proxies (full size, and 2K when wider than 2048).
    Proxy,
    /// Review movies (H.264 MP4, delivery codec MOV), filmstrip.
    Review,
    /// Tracker registration (Version, PublishedFile, Shot cut info).
    Register,
    /// Remove iom's own temporary files.
    Cleanup,
}

impl StepKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StepKind; 7] = [
        StepKind::Probe,
        StepKind::Copy,
        StepKind::Thumbnail,
        StepKind::Proxy,
        StepKind::Review,
        StepKind::Register,
        StepKind::Cleanup,
    ];

    /// Lower-case name (queue suffix, routing key, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Probe => "probe",
            StepKind::Copy => "copy",
            StepKind::Thumbnail => "thumbnail",
            StepKind::Proxy => "proxy",
            StepKind::Review => "review",
            StepKind::Register => "register",
            StepKind::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StepKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown step kind {s:?}; expected one of {}",
                    StepKind::ALL.map(StepKind::as_str).join(", ")
                )
            })
    }
}

/// What to do with missing frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// Refuse the publish (default).
    Fail,
    /// Fill missing frames with black (media steps).
    Black,
    /// Repeat the previous frame (media steps).
    Previous,
}

/// Where a plate's source frames are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    /// An image sequence: `dir/head<frame padded to pad>.ext`, frames `first..=last`.
    Sequence {
        /// Folder.
        dir: PathBuf,
        /// File-name head.
        head: String,
        /// Padding digits.
        pad: usize,
        /// Extension as on disk.
        ext: String,
        /// First frame to publish (`just_in`).
        first: i64,
        /// Last frame to publish (`just_out`).
        last: i64,
    },
    /// A movie file (an EDL event's range when `first`/`last` are set).
    Movie {
        /// The movie.
        path: PathBuf,
        /// First frame (1-based) to publish.
        first: i64,
        /// Last frame (1-based).
        last: i64,
    },
}

impl Source {
    /// Number of frames to publish.
    pub fn frame_count(&self) -> i64 {
        match self {
            Source::Sequence { first, last, .. } | Source::Movie { first, last, .. } => {
                (last - first + 1).max(0)
            }
        }
    }

    /// The path of source frame `n` (sequences only).
    pub fn frame_path(&self, n: i64) -> Option<PathBuf> {
        match self {
            Source::Sequence {
                dir,
                head,
                pad,
                ext,
                ..
            } => Some(dir.join(format!("{head}{n:0width$}.{ext}", width = *pad))),
            Source::Movie { .. } => None,
        }
    }
}

/// Frames written from a movie plate: the original's "MOV to DPX", in the formats
/// of the Project's `sg_out_format` (original-app.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameFormat {
    /// DPX, 10-bit RGB (filled, method A).
    Dpx10,
    /// DPX, 12-bit RGB.
    Dpx12,
    /// OpenEXR, half float, ZIP.
    Exr16,
    /// OpenEXR, 32-bit float, ZIP.
    Exr32,
}

impl FrameFormat {
    /// Every format, in the order of the original's menu.
    pub const ALL: [FrameFormat; 4] = [
        FrameFormat::Exr32,
        FrameFormat::Exr16,
        FrameFormat::Dpx10,
        FrameFormat::Dpx12,
    ];

    /// The file extension of the frames.
    pub fn ext(self) -> &'static str {
        match self {
            FrameFormat::Dpx10 | FrameFormat::Dpx12 => "dpx",
            FrameFormat::Exr16 | FrameFormat::Exr32 => "exr",
        }
    }

    /// The name as in the Project's `sg_out_format` (`dpx 10bit`).
    pub fn name(self) -> &'static str {
        match self {
            FrameFormat::Dpx10 => "dpx 10bit",
            FrameFormat::Dpx12 => "dpx 12bit",
            FrameFormat::Exr16 => "exr 16bit",
            FrameFormat::Exr32 => "exr 32bit",
        }
    }

    /// Parses a setting or option: a format name (`dpx 10bit`, `DPX10`, `exr_16`;
    /// case, spaces, `_`, `-` and a trailing `bit` ignored), or `""`/`off`/`none`
    /// for "keep the movie" (`Ok(None)`).
    pub fn parse_setting(s: &str) -> Result<Option<FrameFormat>, String> {
        let key: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect::<String>()
            .to_ascii_lowercase();
        let key = key.strip_suffix("bit").unwrap_or(&key);
        match key {
            "" | "off" | "none" | "movie" => Ok(None),
            "dpx10" => Ok(Some(FrameFormat::Dpx10)),
            "dpx12" => Ok(Some(FrameFormat::Dpx12)),
            "exr16" | "exrhalf" => Ok(Some(FrameFormat::Exr16)),
            "exr32" | "exrfloat" => Ok(Some(FrameFormat::Exr32)),
            _ => Err(format!(
                "{s:?} is not a frame format; use one of {}, or \"off\" to keep the movie",
                FrameFormat::ALL
                    .map(|f| format!("\"{}\"", f.name()))
                    .join(", ")
            )),
        }
    }
}

impl fmt::Display for FrameFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a plate is published (all paths absolute, under the project root; the
/// planner checks that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlateOutput {
    /// `P/seq/<seq>/<shot>/plate/<type>/v###/`.
    pub frames_dir: PathBuf,
    /// `<shot>_<type>_v###` (the plate name).
    pub plate_name: String,
    /// Output extension (`exr`, `dpx`, `jpg`, or the movie's).
    pub ext: String,
    /// First output frame number (1001).
    pub first_frame: i64,
    /// Output padding (4).
    pub pad: usize,
    /// `P/seq/<seq>/<shot>/plate/` (movies, filmstrip).
    pub plate_dir: PathBuf,
    /// `P/seq/<seq>/<shot>/plate/<type>/v###_jpg/`.
    pub jpg_dir: PathBuf,
    /// `P/seq/<seq>/<shot>/plate/<type>/v###_jpg_2k/`.
    pub jpg_2k_dir: PathBuf,
}

impl PlateOutput {
    /// Path of published frame `n` (output numbering).
    pub fn frame_path(&self, n: i64) -> PathBuf {
        self.frames_dir.join(format!(
            "{}.{n:0width$}.{}",
            self.plate_name,
            self.ext,
            width = self.pad
        ))
    }

    /// A review movie of this plate: `<plate_dir>/<plate>.<ext>` (`mov`, `mp4`,
    /// `webm`), as the original laid them out (original-app.md §10).
    pub fn movie_path(&self, ext: &str) -> PathBuf {
        self.plate_dir.join(format!("{}.{ext}", self.plate_name))
    }

    /// The filmstrip: `<plate_dir>/<plate>stream.jpeg` (sic, as the original).
    pub fn filmstrip_path(&self) -> PathBuf {
        self.plate_dir
            .join(format!("{}stream.jpeg", self.plate_name))
    }

    /// Montage frames: `<plate_dir>/montage/<type>_v###_jpg/`, where
    /// `<type>_v###` is the plate name without its shot prefix.
    pub fn montage_dir(&self) -> PathBuf {
        let tail = self
            .jpg_dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let version = self
            .frames_dir
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.plate_dir
            .join("montage")
            .join(format!("{tail}_{version}_jpg"))
    }
}

/// What the publish is about, for the tracker and for people reading the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishInfo {
    /// Project name.
    pub project: String,
    /// Sequence code (`shot.split('_')[0]`, as the original).
    pub seq: String,
    /// Shot code.
    pub shot: String,
    /// Seq type (`org`, `ref`, `src`, `editor`, `lib`).
    pub seq_type: String,
    /// Version number.
    pub version: u32,
    /// Scan name (sequence head or movie file name).
    pub scan_name: String,
    /// Clip name.
    pub clip_name: String,
    /// Scan colour space.
    pub colorspace: String,
    /// Frame rate (from the row).
    pub fps: Option<f64>,
    /// Resolution `W x H` (from the row).
    pub resolution: String,
    /// Timecode in/out (group min/max).
    pub timecode_in: String,
    /// Timecode out.
    pub timecode_out: String,
    /// `just_in` (group min).
    pub just_in: i64,
    /// `just_out` (group max).
    pub just_out: i64,
    /// One entry per row of a retime group.
    #[serde(default)]
    pub retimes: Vec<Retime>,
}

/// One row of a retime group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retime {
    /// `just_in`.
    pub just_in: i64,
    /// `just_out`.
    pub just_out: i64,
    /// `retime_start_frame`.
    pub start_frame: Option<i64>,
    /// `retime_duration`.
    pub duration: Option<i64>,
    /// `retime_percent`.
    pub percent: Option<f64>,
}

/// The work of one task, with its parameters.
// `Register` carries the publish info; a step is built once per task and moved, not
// copied in bulk, so boxing it would only add noise to every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Check the source.
    Probe {
        /// The frames.
        source: Source,
        /// Missing-frame policy.
        gap_policy: GapPolicy,
    },
    /// Copy source frames to the output, renumbered.
    Copy {
        /// The frames.
        source: Source,
        /// The destination.
        output: PlateOutput,
        /// A movie source published as frames in this format (`output.ext` is then
        /// the frames' extension); `None` copies the source as it is. Schema 2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frames: Option<FrameFormat>,
    },
    /// Thumbnail of the published plate.
    Thumbnail {
        /// The published plate.
        output: PlateOutput,
        /// Scan colour space.
        colorspace: String,
    },
    /// JPEG proxies.
    Proxy {
        /// The published plate.
        output: PlateOutput,
        /// Scan colour space.
        colorspace: String,
    },
    /// Review movies and filmstrip.
    Review {
        /// The published plate.
        output: PlateOutput,
        /// Scan colour space.
        colorspace: String,
    },
    /// Tracker registration.
    Register {
        /// The published plate.
        output: PlateOutput,
        /// What to register.
        info: PublishInfo,
    },
    /// Remove iom's temporary files of this publish (never published files).
    Cleanup {
        /// The published plate.
        output: PlateOutput,
    },
}

impl Step {
    /// The lowest message schema that can carry this step (see [`SCHEMA_VERSION`]).
    pub fn schema(&self) -> u32 {
        match self {
            Step::Copy {
                frames: Some(_), ..
            } => 2,
            _ => 1,
        }
    }

    /// The kind of this step.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::Probe { .. } => StepKind::Probe,
            Step::Copy { .. } => StepKind::Copy,
            Step::Thumbnail { .. } => StepKind::Thumbnail,
            Step::Proxy { .. } => StepKind::Proxy,
            Step::Review { .. } => StepKind::Review,
            Step::Register { .. } => StepKind::Register,
            Step::Cleanup { .. } => StepKind::Cleanup,
        }
    }
}

/// A stable identifier, printed as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A graph's stable identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GraphId(pub String);

impl fmt::Display for GraphId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 64-bit FNV-1a: a stable hash for ids (std's hasher is not stable across
/// releases, and ids are stored on disk and in the tracker).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The graph id of a publish key (`project/shot/scan_name/type/v###`):
/// `<shot>_<type>_v###-<8 hex>`.
pub fn graph_id(
    project: &str,
    shot: &str,
    scan_name: &str,
    seq_type: &str,
    version: u32,
) -> GraphId {
    let v = format!("v{version:03}");
    let h = stable_hash(&[project, shot, scan_name, seq_type, &v]);
    GraphId(format!("{shot}_{seq_type}_{v}-{:08x}", h as u32))
}

/// The id of a graph's task of `kind` (`<graph id>.<kind>`; `discriminator` tells
/// apart several tasks of one kind, empty otherwise).
pub fn task_id(graph: &GraphId, kind: StepKind, discriminator: &str) -> TaskId {
    if discriminator.is_empty() {
        TaskId(format!("{graph}.{kind}"))
    } else {
        TaskId(format!("{graph}.{kind}.{discriminator}"))
    }
}

/// One node of a publish graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskNode {
    /// Stable id.
    pub id: TaskId,
    /// Human label (`copy org`, `render jpg` …).
    pub label: String,
    /// The work.
    pub step: Step,
    /// Tasks that must succeed first.
    pub deps: Vec<TaskId>,
}

/// A publish graph: one scanlist group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Schema version of this document.
    pub schema: u32,
    /// Stable id.
    pub id: GraphId,
    /// What is published.
    pub info: PublishInfo,
    /// The work folder (manifest, completion records, claims).
    pub work_dir: PathBuf,
    /// Nodes in a topological order.
    pub nodes: Vec<TaskNode>,
}

/// Why a graph is malformed (a planner bug or a tampered manifest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Two nodes share an id.
    #[error("graph {graph}: duplicate task id {task}")]
    DuplicateId {
        /// Graph.
        graph: String,
        /// Task.
        task: String,
    },
    /// An edge names a task that is not in the graph.
    #[error("graph {graph}: task {task} depends on unknown task {dep}")]
    UnknownDep {
        /// Graph.
        graph: String,
        /// Task.
        task: String,
        /// Missing dependency.
        dep: String,
    },
    /// The edges form a cycle.
    #[error("graph {graph}: dependency cycle through {task}")]
    Cycle {
        /// Graph.
        graph: String,
        /// A task on the cycle.
        task: String,
    },
}

impl Graph {
    /// Checks ids, edges and acyclicity; returns the graph with nodes in a
    /// topological order (stable: ties keep their given order).
    pub fn validated(mut self) -> Result<Graph, GraphError> {
        let g = self.id.0.clone();
        let mut seen = BTreeSet::new();
        for n in &self.nodes {
            if !seen.insert(n.id.clone()) {
                return Err(GraphError::DuplicateId {
                    graph: g,
                    task: n.id.0.clone(),
                });
            }
        }
        for n in &self.nodes {
            for d in &n.deps {
                if !seen.contains(d) {
                    return Err(GraphError::UnknownDep {
                        graph: g,
                        task: n.id.0.clone(),
                        dep: d.0.clone(),
                    });
                }
            }
        }
        let mut done: BTreeSet<TaskId> = BTreeSet::new();
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut rest: Vec<TaskNode> = std::mem::take(&mut self.nodes);
        while !rest.is_empty() {
            let before = rest.len();
            let mut i = 0;
            while i < rest.len() {
                if rest[i].deps.iter().all(|d| done.contains(d)) {
                    let n = rest.remove(i);
                    done.insert(n.id.clone());
                    order.push(n);
                } else {
                    i += 1;
                }
            }
            if rest.len() == before {
                return Err(GraphError::Cycle {
                    graph: g,
                    task: rest[0].id.0.clone(),
                });
            }
        }
        self.nodes = order;
        Ok(self)
    }

    /// The node with this id.
    pub fn node(&self, id: &TaskId) -> Option<&TaskNode> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// Nodes with no dependencies (dispatched at submit time).
    pub fn roots(&self) -> Vec<&TaskNode> {
        self.nodes.iter().filter(|n| n.deps.is_empty()).collect()
    }

    /// Nodes that depend on `id`.
    pub fn children(&self, id: &TaskId) -> Vec<&TaskNode> {
        self.nodes.iter().filter(|n| n.deps.contains(id)).collect()
    }

    /// The message that dispatches node `id` at `attempt`.
    pub fn message(&self, id: &TaskId, attempt: u32) -> Option<TaskMessage> {
        self.node(id).map(|n| TaskMessage {
            schema: n.step.schema(),
            graph_id: self.id.clone(),
            task_id: n.id.clone(),
            attempt,
            retries_from: 1,
            work_dir: self.work_dir.clone(),
            step: n.step.clone(),
        })
    }

    /// The graph as an indented tree, dependencies under their dependents as
    /// Tractor shows it (a task runs after its subtasks). A shared dependency is
    /// printed once and referenced afterwards.
    pub fn tree(&self, state: &dyn Fn(&TaskId) -> Option<String>) -> String {
        let mut out = format!(
            "{}  ({} v{:03})\n",
            self.id, self.info.shot, self.info.version
        );
        let dependents: BTreeMap<&TaskId, usize> = self
            .nodes
            .iter()
            .flat_map(|n| n.deps.iter())
            .fold(BTreeMap::new(), |mut m, d| {
                *m.entry(d).or_insert(0) += 1;
                m
            });
        let tops: Vec<&TaskNode> = self
            .nodes
            .iter()
            .filter(|n| !dependents.contains_key(&n.id))
            .collect();
        let mut printed = BTreeSet::new();
        for (i, t) in tops.iter().enumerate() {
            self.tree_node(t, "", i + 1 == tops.len(), state, &mut printed, &mut out);
        }
        out
    }

    fn tree_node(
        &self,
        n: &TaskNode,
        prefix: &str,
        last: bool,
        state: &dyn Fn(&TaskId) -> Option<String>,
        printed: &mut BTreeSet<TaskId>,
        out: &mut String,
    ) {
        let branch = if last { "└─ " } else { "├─ " };
        let st = state(&n.id).map(|s| format!("  [{s}]")).unwrap_or_default();
        if !printed.insert(n.id.clone()) {
            out.push_str(&format!("{prefix}{branch}{} (see above)\n", n.label));
            return;
        }
        out.push_str(&format!("{prefix}{branch}{}  {}{st}\n", n.label, n.id));
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        let deps: Vec<&TaskNode> = n.deps.iter().filter_map(|d| self.node(d)).collect();
        for (i, d) in deps.iter().enumerate() {
            self.tree_node(d, &child_prefix, i + 1 == deps.len(), state, printed, out);
        }
    }
}

/// A task on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMessage {
    /// [`SCHEMA_VERSION`] of the sender.
    pub schema: u32,
    /// The graph.
    pub graph_id: GraphId,
    /// The task.
    pub task_id: TaskId,
    /// Attempt number, from 1. Every start of a task has a higher attempt than
    /// the one before it, which is what fences a stale attempt's late report.
    pub attempt: u32,
    /// The first attempt of the current round of retries: 1, or the attempt at
    /// which a human's re-run started a fresh round ([`TaskMessage::requeued`],
    /// [`TaskMessage::with_fresh_round`]). A transient
    /// failure is retried while the round has attempts left
    /// ([`TaskMessage::attempts_in_round`] below `worker.max_attempts`). Left out
    /// of the JSON when 1, so such messages stay readable by schema-2 workers.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub retries_from: u32,
    /// The graph's work folder.
    pub work_dir: PathBuf,
    /// The work.
    pub step: Step,
}

/// Why bytes are not a task message this worker can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not the expected shape.
    #[error("malformed task message: {0}")]
    Malformed(String),
    /// A schema version this worker does not speak.
    #[error("task message schema {found} is not supported (this worker speaks {MIN_SCHEMA_VERSION} to {SCHEMA_VERSION}); upgrade the worker or requeue from the DLQ after it")]
    Schema {
        /// The version found.
        found: u64,
    },
}

impl crate::error::Classify for DecodeError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Permanent
    }
}

impl TaskMessage {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes, checking the schema version first so a future message gives a
    /// schema error, not a confusing field error.
    pub fn decode(bytes: &[u8]) -> Result<TaskMessage, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::Malformed(format!(
                "{} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let schema = v
            .get("schema")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| DecodeError::Malformed("no numeric `schema` field".into()))?;
        if !(u64::from(MIN_SCHEMA_VERSION)..=u64::from(SCHEMA_VERSION)).contains(&schema) {
            return Err(DecodeError::Schema { found: schema });
        }
        let m: TaskMessage =
            serde_json::from_value(v).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if m.attempt == 0 {
            return Err(DecodeError::Malformed("attempt must be 1 or more".into()));
        }
        if m.retries_from == 0 || m.retries_from > m.attempt {
            return Err(DecodeError::Malformed(format!(
                "retries_from {} must be between 1 and the attempt ({})",
                m.retries_from, m.attempt
            )));
        }
        if m.task_id.0.is_empty() || m.graph_id.0.is_empty() {
            return Err(DecodeError::Malformed("empty task or graph id".into()));
        }
        Ok(m)
    }
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(n: &u32) -> bool {
    *n == 1
}

impl TaskMessage {
    /// The lowest schema that can carry this message (see [`SCHEMA_VERSION`]).
    pub fn lowest_schema(&self) -> u32 {
        let round = if self.retries_from == 1 { 1 } else { 3 };
        self.step.schema().max(round)
    }

    /// How many attempts of the current round have run, this one included.
    pub fn attempts_in_round(&self) -> u32 {
        self.attempt.saturating_sub(self.retries_from) + 1
    }

    /// The message that runs this task again after a dead letter: the next
    /// attempt, so it supersedes the dead one (a late report about the dead
    /// attempt, such as the broker's dead-letter notice, is then fenced off).
    /// With `fresh_round` the task gets `worker.max_attempts` attempts again;
    /// without, a transient failure of the new attempt is final, as before it
    /// died, unless its round still had attempts left.
    pub fn requeued(&self, fresh_round: bool) -> TaskMessage {
        let mut next = self.clone();
        next.attempt = self.attempt.saturating_add(1);
        if fresh_round {
            return next.with_fresh_round();
        }
        next.schema = next.lowest_schema();
        next
    }

    /// This message opening a fresh round of retries at its attempt.
    pub fn with_fresh_round(mut self) -> TaskMessage {
        self.retries_from = self.attempt;
        self.schema = self.lowest_schema();
        self
    }
}

/// Largest task message accepted (messages carry ids and paths, never content).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> PlateOutput {
        PlateOutput {
            frames_dir: "/show/p/seq/A/A_0010/plate/org/v001".into(),
            plate_name: "A_0010_org_v001".into(),
            ext: "exr".into(),
            first_frame: 1001,
            pad: 4,
            plate_dir: "/show/p/seq/A/A_0010/plate".into(),
            jpg_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg".into(),
            jpg_2k_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg_2k".into(),
        }
    }

    fn graph() -> Graph {
        let id = graph_id("p", "A_0010", "plate.", "org", 1);
        let t = |k| task_id(&id, k, "");
        let node = |k: StepKind, deps: Vec<TaskId>| TaskNode {
            id: t(k),
            label: k.to_string(),
            step: Step::Cleanup { output: out() },
            deps,
        };
        Graph {
            schema: SCHEMA_VERSION,
            id: id.clone(),
            info: PublishInfo {
                project: "p".into(),
                seq: "A".into(),
                shot: "A_0010".into(),
                seq_type: "org".into(),
                version: 1,
                scan_name: "plate.".into(),
                clip_name: String::new(),
                colorspace: "linear".into(),
                fps: Some(24.0),
                resolution: "64 x 36".into(),
                timecode_in: String::new(),
                timecode_out: String::new(),
                just_in: 1,
                just_out: 2,
                retimes: vec![],
            },
            work_dir: "/w".into(),
            nodes: vec![
                node(StepKind::Cleanup, vec![t(StepKind::Register)]),
                node(
                    StepKind::Register,
                    vec![t(StepKind::Proxy), t(StepKind::Thumbnail)],
                ),
                node(StepKind::Proxy, vec![t(StepKind::Copy)]),
                node(StepKind::Thumbnail, vec![t(StepKind::Copy)]),
                node(StepKind::Copy, vec![t(StepKind::Probe)]),
                node(StepKind::Probe, vec![]),
            ],
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(
            graph_id("p", "A_0010", "x.", "org", 1),
            graph_id("p", "A_0010", "x.", "org", 1)
        );
        assert_ne!(
            graph_id("p", "A_0010", "x.", "org", 1),
            graph_id("p", "A_0010", "x.", "org", 2)
        );
        assert_ne!(
            graph_id("p", "A_0010", "x.", "org", 1),
            graph_id("p", "A_0010", "y.", "org", 1)
        );
        assert!(graph_id("p", "A_0010", "x.", "org", 7)
            .0
            .starts_with("A_0010_org_v007-"));
    }

    #[test]
    fn validation_orders_topologically_and_finds_cycles() {
        let g = graph().validated().unwrap();
        let pos = |k: StepKind| g.nodes.iter().position(|n| n.label == k.as_str()).unwrap();
        assert!(pos(StepKind::Probe) < pos(StepKind::Copy));
        assert!(pos(StepKind::Copy) < pos(StepKind::Proxy));
        assert!(pos(StepKind::Register) < pos(StepKind::Cleanup));
        assert_eq!(g.roots().len(), 1);
        assert_eq!(g.children(&task_id(&g.id, StepKind::Copy, "")).len(), 2);

        let mut bad = graph();
        bad.nodes[5]
            .deps
            .push(task_id(&bad.id, StepKind::Cleanup, ""));
        assert!(matches!(bad.validated(), Err(GraphError::Cycle { .. })));
        let mut bad = graph();
        bad.nodes[5].deps.push(TaskId("nope".into()));
        assert!(matches!(
            bad.validated(),
            Err(GraphError::UnknownDep { .. })
        ));
    }

    #[test]
    fn tree_prints_shared_dependencies_once() {
        let g = graph().validated().unwrap();
        let t = g.tree(&|_| None);
        assert_eq!(t.matches("copy  ").count(), 1, "{t}");
        assert!(t.contains("(see above)"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("cleanup"), "{t}");
    }

    #[test]
    fn frame_formats_parse_from_settings_and_set_the_schema() {
        assert_eq!(
            FrameFormat::parse_setting("dpx 10bit"),
            Ok(Some(FrameFormat::Dpx10))
        );
        assert_eq!(
            FrameFormat::parse_setting("EXR_16"),
            Ok(Some(FrameFormat::Exr16))
        );
        for f in FrameFormat::ALL {
            assert_eq!(FrameFormat::parse_setting(f.name()), Ok(Some(f)));
        }
        assert_eq!(FrameFormat::parse_setting(""), Ok(None));
        assert_eq!(FrameFormat::parse_setting("Off"), Ok(None));
        let e = FrameFormat::parse_setting("tiff 8bit").unwrap_err();
        assert!(e.contains("\"dpx 10bit\""), "{e}");

        let copy = |frames| Step::Copy {
            source: Source::Movie {
                path: "/d/a.mov".into(),
                first: 1,
                last: 2,
            },
            output: out(),
            frames,
        };
        assert_eq!(copy(None).schema(), 1);
        assert_eq!(copy(Some(FrameFormat::Dpx12)).schema(), 2);
        let json = serde_json::to_string(&copy(None)).unwrap();
        assert!(!json.contains(r#""frames":"#), "{json}");
        let json = serde_json::to_string(&copy(Some(FrameFormat::Exr32))).unwrap();
        assert!(json.contains(r#""frames":"exr32""#), "{json}");
    }

    #[test]
    fn a_requeue_supersedes_the_dead_attempt_and_a_reset_starts_a_fresh_round() {
        let g = graph().validated().unwrap();
        let m = g.message(&task_id(&g.id, StepKind::Probe, ""), 3).unwrap();
        assert_eq!((m.retries_from, m.attempts_in_round()), (1, 3));

        // A plain requeue: the next attempt, the same round (so a task that gave
        // up gets one more try), still the schema of the step.
        let again = m.requeued(false);
        assert_eq!((again.attempt, again.retries_from), (4, 1));
        assert_eq!((again.attempts_in_round(), again.schema), (4, 1));
        let json = String::from_utf8(again.encode()).unwrap();
        assert!(!json.contains("retries_from"), "{json}");

        // A reset: the next attempt opens a fresh round, which needs schema 3.
        let fresh = m.requeued(true);
        assert_eq!((fresh.attempt, fresh.retries_from), (4, 4));
        assert_eq!((fresh.attempts_in_round(), fresh.schema), (1, 3));
        assert_eq!(TaskMessage::decode(&fresh.encode()).unwrap(), fresh);
        let retry = TaskMessage {
            attempt: 5,
            ..fresh.clone()
        };
        assert_eq!(retry.attempts_in_round(), 2);

        // A round cannot start after its attempt, nor at 0.
        let json = String::from_utf8(fresh.encode()).unwrap();
        for bad in [r#""retries_from":5"#, r#""retries_from":0"#] {
            let b = json.replace(r#""retries_from":4"#, bad);
            assert!(
                matches!(TaskMessage::decode(b.as_bytes()), Err(DecodeError::Malformed(e)) if e.contains("retries_from")),
                "{b}"
            );
        }
    }

    #[test]
    fn messages_round_trip_and_reject_bad_input() {
        let g = graph().validated().unwrap();
        let m = g.message(&task_id(&g.id, StepKind::Probe, ""), 1).unwrap();
        let bytes = m.encode();
        assert_eq!(TaskMessage::decode(&bytes).unwrap(), m);
        let json = String::from_utf8(bytes).unwrap();
        assert!(json.contains(r#""kind":"cleanup""#), "{json}");

        let future = json.replace(r#""schema":1"#, r#""schema":4"#);
        assert_eq!(
            TaskMessage::decode(future.as_bytes()),
            Err(DecodeError::Schema { found: 4 })
        );
        let past = json.replace(r#""schema":1"#, r#""schema":0"#);
        assert_eq!(
            TaskMessage::decode(past.as_bytes()),
            Err(DecodeError::Schema { found: 0 })
        );
        assert!(matches!(
            TaskMessage::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            TaskMessage::decode(b"{}"),
            Err(DecodeError::Malformed(_))
        ));
        let zero = json.replace(r#""attempt":1"#, r#""attempt":0"#);
        assert!(TaskMessage::decode(zero.as_bytes()).is_err());
        let extra = json.replacen('{', r#"{"evil":1,"#, 1);
        assert!(TaskMessage::decode(extra.as_bytes()).is_err());
        let unknown_kind = json.replace(r#""kind":"cleanup""#, r#""kind":"format_disk""#);
        assert!(TaskMessage::decode(unknown_kind.as_bytes()).is_err());
    }
}
