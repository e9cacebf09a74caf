//! Where publishes are registered: the [`Tracker`] trait, the [`Registration`]
//! built from a publish (the entities and fields the original wrote to ShotGrid,
//! original-app.md §11), and [`LocalTracker`], JSON documents under the project
//! root, used until the ShotGrid client lands behind the same trait.
//!
//! Registration is idempotent: every entity is found by its natural key and
//! created only if absent (search-then-create), and creation is an exclusive
//! create, so two concurrent registrations of the same key give one entity. A
//! re-registration updates the entity in place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::error::{io_class, Classify, ErrorClass};
use crate::media::MediaFormat;
use crate::store::{create_if_absent, now_ms, replace_atomic, unique_temp};
use crate::task::{PlateOutput, PublishInfo, TaskId};

/// Why a registration or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// A tracker file could not be read or written.
    #[error("local tracker: cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A tracker document does not parse.
    #[error("local tracker document {path} is not valid: {detail}; it was edited by hand: fix or remove it")]
    Corrupt {
        /// The document.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// A natural key that cannot name a document.
    #[error("cannot register {entity} {key:?}: the code {reason}; fix the shot or sequence name in the scanlist")]
    BadKey {
        /// Entity type.
        entity: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The configured tracker kind has no implementation yet.
    #[error("{0}")]
    NotImplemented(String),
    /// The tracker settings are wrong.
    #[error("bad tracker settings: {0}")]
    Config(String),
    /// A ShotGrid call failed.
    #[error(transparent)]
    ShotGrid(#[from] crate::shotgrid::ShotGridError),
}

impl Classify for TrackerError {
    fn class(&self) -> ErrorClass {
        match self {
            TrackerError::Io { source, .. } => io_class(source),
            TrackerError::ShotGrid(e) => e.class(),
            _ => ErrorClass::Permanent,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TrackerError + 'a {
    move |source| TrackerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A registration backend.
pub trait Tracker: Send + Sync {
    /// Finds or creates the Sequence, Shot, Version and PublishedFile of a
    /// publish, updating them when they exist. Idempotent.
    fn register(&self, req: &Registration) -> Result<Registered, TrackerError>;

    /// Version numbers registered for a shot and seq type (for version
    /// auto-increment), ascending.
    fn find_versions(
        &self,
        project: &str,
        shot: &str,
        seq_type: &str,
    ) -> Result<Vec<u32>, TrackerError>;
}

/// The tracker the settings ask for: ShotGrid when `shotgrid.site` is set (or
/// `tracker.kind: shotgrid`), else [`LocalTracker`]. ShotGrid credentials are
/// resolved here, so missing ones are a startup error naming what to set.
pub fn open_tracker(settings: &Settings) -> Result<Arc<dyn Tracker>, TrackerError> {
    let kind = settings.tracker.kind.trim();
    if kind == "shotgrid" || !settings.shotgrid.site.trim().is_empty() {
        if settings.shotgrid.site.trim().is_empty() {
            return Err(TrackerError::Config(
                "tracker.kind is shotgrid but shotgrid.site is empty; set shotgrid.site to the site URL".into(),
            ));
        }
        return Ok(Arc::new(crate::shotgrid::ShotGridTracker::open(
            &settings.shotgrid,
        )?));
    }
    match kind {
        "local" => {
            let rel = Path::new(&settings.tracker.local_dir);
            let escapes = rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)));
            if settings.tracker.local_dir.trim().is_empty() || escapes {
                return Err(TrackerError::Config(format!(
                    "tracker.local_dir {:?} must be a relative folder under project.root without `..`",
                    settings.tracker.local_dir
                )));
            }
            Ok(Arc::new(LocalTracker::new(settings.project.root.join(rel))))
        }
        other => Err(TrackerError::Config(format!(
            "tracker.kind {other:?} is unknown; expected local or shotgrid"
        ))),
    }
}

// ---------------------------------------------------------------------------
// The registration (what the original wrote, §11).
// ---------------------------------------------------------------------------

/// Cut information written on the Shot by `org` publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotCut {
    /// First published frame (1001).
    pub sg_cut_in: i64,
    /// Last published frame (`1000 + N`; a retime: `1000 + Σ retime_duration`).
    pub sg_cut_out: i64,
    /// Frame count.
    pub sg_cut_duration: i64,
    /// Timecode in.
    pub sg_timecode_in: String,
    /// Timecode out.
    pub sg_timecode_out: String,
    /// `W x H`.
    pub sg_resolution: String,
    /// Clip name (the original's field name, sic).
    pub sg_clib_name: String,
    /// Retime durations, newline-joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_retime_duration: Option<String>,
    /// Retime percents with `%`, newline-joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_retime_percent: Option<String>,
}

/// The Version's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFields {
    /// `<shot>_<version type>_v###.mov` (the original's code).
    pub code: String,
    /// The version number.
    pub version_number: u32,
    /// `fin`.
    pub sg_status_list: String,
    /// The review movie, `<plate_dir>/<plate>.mov`.
    pub sg_path_to_movie: String,
    /// `<frames_dir>/<plate>.%04d.<ext>` (a movie plate: the movie's path).
    pub sg_path_to_frames: String,
    /// First published frame (1001; the original wrote 1).
    pub sg_first_frame: i64,
    /// Last published frame.
    pub sg_last_frame: i64,
    /// `just_in`.
    pub sg_just_in: i64,
    /// `just_out`.
    pub sg_just_out: i64,
    /// Scan name.
    pub sg_scan_name: String,
    /// Clip name.
    pub sg_clip_name: String,
    /// Timecode in.
    pub sg_timecode_in: String,
    /// Timecode out.
    pub sg_timecode_out: String,
    /// `org`, `ref`, `editor` or `src` (everything else, `lib` included).
    pub sg_version_type: String,
    /// Scan colour space.
    pub sg_scan_colorspace: String,
    /// Row frame rate.
    pub sg_uploaded_movie_frame_rate: Option<f64>,
    /// Frame count.
    pub sg_cut_duration: i64,
    /// Retime durations, newline-joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_retime_duration: Option<String>,
    /// Retime percents with `%`, newline-joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_retime_percent: Option<String>,
    /// Retime start frames, newline-joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg_retime_start_frame: Option<String>,
}

/// The PublishedFile's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedFileFields {
    /// `<shot>_<type>`.
    pub name: String,
    /// The version number.
    pub version_number: u32,
    /// `Plate` (org), `Reference` (ref) or `Source`.
    pub published_file_type: String,
    /// The frames path (`%04d`) or the movie's path.
    pub path: String,
    /// Scan colour space.
    pub sg_colorspace: String,
}

/// Everything one publish registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The register task (recorded on every entity it creates or updates).
    pub task_id: TaskId,
    /// Project name.
    pub project: String,
    /// Seq type of the row (`org`, `ref`, `src`, `editor`, `lib`).
    pub seq_type: String,
    /// Sequence code.
    pub sequence: String,
    /// Shot code.
    pub shot: String,
    /// Shot cut information (`org` only).
    pub cut: Option<ShotCut>,
    /// The Version.
    pub version: VersionFields,
    /// The PublishedFile.
    pub published_file: PublishedFileFields,
    /// Media for the Version, uploaded by trackers that store media (ShotGrid)
    /// when the file exists.
    #[serde(default)]
    pub media: Vec<MediaUpload>,
}

/// A file to upload into a field of the Version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUpload {
    /// The Version field (`sg_uploaded_movie`, `image`, `filmstrip_image`).
    pub field: String,
    /// The file.
    pub path: PathBuf,
}

/// The Version type of a seq type (original-app.md §6).
pub fn version_type(seq_type: &str) -> &'static str {
    match seq_type {
        "org" => "org",
        "ref" => "ref",
        "editor" => "editor",
        _ => "src",
    }
}

/// The PublishedFileType of a seq type (original-app.md §6).
pub fn published_file_type(seq_type: &str) -> &'static str {
    match seq_type {
        "org" => "Plate",
        "ref" => "Reference",
        _ => "Source",
    }
}

fn join_lines<T>(items: &[T], f: impl Fn(&T) -> Option<String>) -> Option<String> {
    let parts: Vec<String> = items.iter().filter_map(f).collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

impl Registration {
    /// Builds the registration of a publish (original-app.md §11).
    pub fn new(info: &PublishInfo, output: &PlateOutput, task_id: &TaskId) -> Registration {
        let vtype = version_type(&info.seq_type);
        let is_retime = info.retimes.first().is_some_and(|r| r.duration.is_some());
        let frames = if is_retime {
            info.retimes.iter().filter_map(|r| r.duration).sum::<i64>()
        } else {
            (info.just_out - info.just_in + 1).max(0)
        };
        let (retime_duration, retime_percent, retime_start) = if is_retime {
            (
                join_lines(&info.retimes, |r| r.duration.map(|d| d.to_string())),
                join_lines(&info.retimes, |r| r.percent.map(|p| format!("{p}%"))),
                join_lines(&info.retimes, |r| r.start_frame.map(|s| s.to_string())),
            )
        } else {
            (None, None, None)
        };
        let first = output.first_frame;
        let last = first + frames - 1;
        let movie = MediaFormat::from_extension(&output.ext) == Some(MediaFormat::Movie);
        let frames_path = if movie {
            output
                .frames_dir
                .join(format!("{}.{}", output.plate_name, output.ext))
        } else {
            output.frames_dir.join(format!(
                "{}.%0{}d.{}",
                output.plate_name, output.pad, output.ext
            ))
        };
        let frames_path = frames_path.display().to_string();
        let cut = (info.seq_type == "org").then(|| ShotCut {
            sg_cut_in: first,
            sg_cut_out: last,
            sg_cut_duration: frames,
            sg_timecode_in: info.timecode_in.clone(),
            sg_timecode_out: info.timecode_out.clone(),
            sg_resolution: info.resolution.clone(),
            sg_clib_name: info.clip_name.clone(),
            sg_retime_duration: retime_duration.clone(),
            sg_retime_percent: retime_percent.clone(),
        });
        Registration {
            task_id: task_id.clone(),
            project: info.project.clone(),
            seq_type: info.seq_type.clone(),
            sequence: info.seq.clone(),
            shot: info.shot.clone(),
            cut,
            version: VersionFields {
                code: format!("{}_{vtype}_v{:03}.mov", info.shot, info.version),
                version_number: info.version,
                sg_status_list: "fin".into(),
                sg_path_to_movie: output.movie_path("mov").display().to_string(),
                sg_path_to_frames: frames_path.clone(),
                sg_first_frame: first,
                sg_last_frame: last,
                sg_just_in: info.just_in,
                sg_just_out: info.just_out,
                sg_scan_name: info.scan_name.clone(),
                sg_clip_name: info.clip_name.clone(),
                sg_timecode_in: info.timecode_in.clone(),
                sg_timecode_out: info.timecode_out.clone(),
                sg_version_type: vtype.into(),
                sg_scan_colorspace: info.colorspace.clone(),
                sg_uploaded_movie_frame_rate: info.fps,
                sg_cut_duration: frames,
                sg_retime_duration: retime_duration,
                sg_retime_percent: retime_percent,
                sg_retime_start_frame: retime_start,
            },
            published_file: PublishedFileFields {
                name: format!("{}_{}", info.shot, info.seq_type),
                version_number: info.version,
                published_file_type: published_file_type(&info.seq_type).into(),
                path: frames_path,
                sg_colorspace: info.colorspace.clone(),
            },
            media: vec![
                MediaUpload {
                    field: "sg_uploaded_movie".into(),
                    path: output.movie_path("mp4"),
                },
                MediaUpload {
                    field: "image".into(),
                    path: crate::steps::thumbnail::thumbnail_path(output),
                },
                MediaUpload {
                    field: "filmstrip_image".into(),
                    path: output.filmstrip_path(),
                },
            ],
        }
    }
}

/// A tracker entity as a registration left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    /// `Sequence`, `Shot`, `Version`, `PublishedFile`.
    pub entity_type: String,
    /// The tracker's id (the local tracker: the natural key).
    pub id: String,
    /// Whether this registration created it (else found and updated).
    pub created: bool,
}

/// What [`Tracker::register`] found or created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The Sequence.
    pub sequence: EntityRef,
    /// The Shot.
    pub shot: EntityRef,
    /// The Version.
    pub version: EntityRef,
    /// The PublishedFile.
    pub published_file: EntityRef,
    /// Version fields whose media this registration uploaded.
    #[serde(default)]
    pub uploaded: Vec<String>,
}

// ---------------------------------------------------------------------------
// The local tracker.
// ---------------------------------------------------------------------------

/// Entity types of the local tracker, one folder each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// `sequences/<code>.json`.
    Sequence,
    /// `shots/<code>.json`.
    Shot,
    /// `versions/<code>.json`.
    Version,
    /// `published_files/<name>.v###.json`.
    PublishedFile,
}

impl EntityKind {
    /// Folder name.
    pub fn dir(self) -> &'static str {
        match self {
            EntityKind::Sequence => "sequences",
            EntityKind::Shot => "shots",
            EntityKind::Version => "versions",
            EntityKind::PublishedFile => "published_files",
        }
    }

    /// Entity type name (ShotGrid's).
    pub fn type_name(self) -> &'static str {
        match self {
            EntityKind::Sequence => "Sequence",
            EntityKind::Shot => "Shot",
            EntityKind::Version => "Version",
            EntityKind::PublishedFile => "PublishedFile",
        }
    }
}

/// One local tracker document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalEntity {
    /// Entity type name.
    pub entity_type: String,
    /// Natural key (also the file name).
    pub id: String,
    /// Project name.
    pub project: String,
    /// Fields, named as in ShotGrid.
    pub fields: Map<String, Value>,
    /// The task that created it.
    pub created_by_task: TaskId,
    /// When, ms since the epoch.
    pub created_at_ms: i64,
    /// The task that last changed it.
    pub updated_by_task: TaskId,
    /// When, ms since the epoch.
    pub updated_at_ms: i64,
}

/// JSON documents under `<project root>/<tracker.local_dir>`:
/// `sequences/`, `shots/`, `versions/`, `published_files/`, one file per entity
/// named by its natural key.
#[derive(Debug, Clone)]
pub struct LocalTracker {
    root: PathBuf,
}

impl LocalTracker {
    /// A tracker in `root` (created on first registration).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalTracker { root: root.into() }
    }

    /// Its folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The document of `kind` with natural key `key`, if it exists.
    pub fn entity(&self, kind: EntityKind, key: &str) -> Result<Option<LocalEntity>, TrackerError> {
        check_key(kind, key)?;
        self.read(&self.doc_path(kind, key))
    }

    /// Every document of `kind`, sorted by key.
    pub fn list(&self, kind: EntityKind) -> Result<Vec<LocalEntity>, TrackerError> {
        let dir = self.root.join(kind.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let Some(doc) = self.read(&entry.path())? {
                out.push(doc);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn doc_path(&self, kind: EntityKind, key: &str) -> PathBuf {
        self.root.join(kind.dir()).join(format!("{key}.json"))
    }

    fn read(&self, path: &Path) -> Result<Option<LocalEntity>, TrackerError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TrackerError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
    }

    fn temp(&self, path: &Path) -> Result<PathBuf, TrackerError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
        let stem = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(unique_temp(&dir, &stem))
    }

    /// Search-then-create by natural key; an existing document gets `fields`
    /// merged in (only rewritten if something changed). The create is exclusive,
    /// so of two concurrent creators one creates and the other updates.
    fn upsert(
        &self,
        kind: EntityKind,
        key: &str,
        project: &str,
        fields: Map<String, Value>,
        task: &TaskId,
    ) -> Result<EntityRef, TrackerError> {
        check_key(kind, key)?;
        let path = self.doc_path(kind, key);
        let dir = self.root.join(kind.dir());
        fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
        let reference = |created| EntityRef {
            entity_type: kind.type_name().into(),
            id: key.to_string(),
            created,
        };
        // Two rounds at most: a lost create race turns into an update.
        for _ in 0..2 {
            if let Some(mut doc) = self.read(&path)? {
                let mut changed = false;
                for (k, v) in &fields {
                    if doc.fields.get(k) != Some(v) {
                        doc.fields.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
                if changed {
                    doc.updated_by_task = task.clone();
                    doc.updated_at_ms = now_ms();
                    let bytes = to_json(&doc, &path)?;
                    replace_atomic(&path, &self.temp(&path)?, &bytes)
                        .map_err(io_err("write", &path))?;
                }
                return Ok(reference(false));
            }
            let now = now_ms();
            let doc = LocalEntity {
                entity_type: kind.type_name().into(),
                id: key.to_string(),
                project: project.to_string(),
                fields: fields.clone(),
                created_by_task: task.clone(),
                created_at_ms: now,
                updated_by_task: task.clone(),
                updated_at_ms: now,
            };
            let bytes = to_json(&doc, &path)?;
            if create_if_absent(&path, &self.temp(&path)?, &bytes)
                .map_err(io_err("create", &path))?
            {
                return Ok(reference(true));
            }
        }
        Err(TrackerError::Corrupt {
            path,
            detail: "the document exists but cannot be read back".into(),
        })
    }
}

fn check_key(kind: EntityKind, key: &str) -> Result<(), TrackerError> {
    let reason = if key.is_empty() {
        Some("is empty")
    } else if key.len() > 200 {
        Some("is longer than 200 characters")
    } else if key.starts_with('.') {
        Some("starts with a dot")
    } else if key.contains('/') || key.contains('\\') || key.contains('\0') {
        Some("contains a path separator")
    } else if key.contains("..") {
        Some("contains `..`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TrackerError::BadKey {
            entity: kind.type_name(),
            key: key.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn to_json<T: Serialize>(v: &T, path: &Path) -> Result<Vec<u8>, TrackerError> {
    serde_json::to_vec_pretty(v).map_err(|e| TrackerError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn object<T: Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The PublishedFile key: `<name>.v###`.
pub fn published_file_key(name: &str, version: u32) -> String {
    format!("{name}.v{version:03}")
}

impl Tracker for LocalTracker {
    fn register(&self, req: &Registration) -> Result<Registered, TrackerError> {
        let task = &req.task_id;
        let p = req.project.as_str();

        let mut f = Map::new();
        f.insert("code".into(), Value::from(req.sequence.clone()));
        let sequence = self.upsert(EntityKind::Sequence, &req.sequence, p, f, task)?;

        let mut f = Map::new();
        f.insert("code".into(), Value::from(req.shot.clone()));
        f.insert("sg_sequence".into(), Value::from(req.sequence.clone()));
        if let Some(cut) = &req.cut {
            f.extend(object(cut));
        }
        let shot = self.upsert(EntityKind::Shot, &req.shot, p, f, task)?;

        let mut f = object(&req.version);
        f.insert("entity".into(), Value::from(format!("Shot:{}", req.shot)));
        f.insert("iom_seq_type".into(), Value::from(req.seq_type.clone()));
        let version = self.upsert(EntityKind::Version, &req.version.code, p, f, task)?;

        let pf_key =
            published_file_key(&req.published_file.name, req.published_file.version_number);
        let mut f = object(&req.published_file);
        f.insert("entity".into(), Value::from(format!("Shot:{}", req.shot)));
        f.insert(
            "version".into(),
            Value::from(format!("Version:{}", req.version.code)),
        );
        let published_file = self.upsert(EntityKind::PublishedFile, &pf_key, p, f, task)?;

        Ok(Registered {
            sequence,
            shot,
            version,
            published_file,
            uploaded: Vec::new(),
        })
    }

    fn find_versions(
        &self,
        project: &str,
        shot: &str,
        seq_type: &str,
    ) -> Result<Vec<u32>, TrackerError> {
        let entity = format!("Shot:{shot}");
        let mut out: Vec<u32> = self
            .list(EntityKind::Version)?
            .into_iter()
            .filter(|v| v.project == project)
            .filter(|v| v.fields.get("entity").and_then(Value::as_str) == Some(entity.as_str()))
            .filter(|v| v.fields.get("iom_seq_type").and_then(Value::as_str) == Some(seq_type))
            .filter_map(|v| v.fields.get("version_number").and_then(Value::as_u64))
            .filter_map(|n| u32::try_from(n).ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}
