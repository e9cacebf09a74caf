//! The publish planner: checked scanlist rows → one validated task [`Graph`] per group.
//!
//! What it does, in order (original-app.md §5, §7, §10, §12):
//! 1. **Settings.** The layout templates of `publish:` are parsed once; an unknown
//!    placeholder, a `frames_dir` without `{version}`, a `work_dir` without `{graph}`
//!    or an unknown colour space stops the plan with [`PlanError::Settings`].
//! 2. **Rows.** Only checked rows take part (unchecked ones are listed in
//!    [`Plan::skipped`]). Every checked row is validated in full and *every* problem
//!    of *every* row is collected, so one run shows the coordinator the whole list
//!    ([`PlanError::Rows`]). Names that become path components (`shot_name`, the seq
//!    code, `type`) must be plain components (`[A-Za-z0-9_.-]`, no leading `.`, no
//!    `..`); `scan_path` must be absolute, free of `..` and inside the delivery root.
//! 3. **Groups.** Rows are grouped by the original's key
//!    `shot_name_scan_name_type_version` (an empty version reads `auto`), in order of
//!    first appearance. A group of several rows is a retime set.
//! 4. **Versions.** An explicit version (the row's, or [`PlanOptions::version_override`])
//!    is used as is; otherwise the next one after everything already there: the
//!    `v###` entries beside the version folder on disk (`v003_jpg` counts as 3, as the
//!    original), the tracker's versions and the versions other groups of this plan
//!    take. Publishing into a version whose frames folder exists and is not empty, or
//!    that the tracker already lists, needs [`PlanOptions::force`]. The check is made
//!    each time the planner runs, so calling it again at submit time catches a
//!    version that appeared since the dry run. One exception: when the last
//!    version (or the explicit one) is these very rows' own earlier publish that
//!    did not finish (same graph, as the caller finds its work folder), the plan
//!    continues it instead ([`Plan::notes`]): publishing again after a failure
//!    finishes the half-published version rather than leaving it behind.
//! 5. **Paths.** Every output path is rendered from the templates under the project
//!    root and must stay below it after lexical normalisation; two groups may not
//!    publish into the same frames folder.
//! 6. **Graphs.** probe → copy → {thumbnail, proxy, review} → register → cleanup, as
//!    far as `publish.steps` enables them, with deterministic ids
//!    ([`crate::task::graph_id`], [`crate::task::task_id`]).
//!
//! The planner does a little read-only IO: it lists version folders, checks whether
//! a target frames folder is empty and finds the on-disk case of a sequence's
//! extension. It writes nothing. Path checks are lexical: a symbolic link inside the
//! project root that points elsewhere is not detected here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{MovieFrames, Settings};
use crate::error::{Classify, ErrorClass};
use crate::scanlist::Row;
use crate::task::{
    graph_id, task_id, FrameFormat, Graph, GraphError, GraphId, PlateOutput, PublishInfo, Retime,
    Source, Step, StepKind, TaskId, TaskNode, SCHEMA_VERSION,
};

/// Extensions published as movies (compared case-insensitively), besides
/// `scan.movie_extensions`.
pub const MOVIE_EXTENSIONS: [&str; 3] = ["mov", "mxf", "mp4"];
/// Longest shot, seq or type name (characters).
pub const MAX_NAME_LEN: usize = 128;
/// Highest version number (the scanlist reader's limit too).
pub const MAX_VERSION: u32 = 99_999;
/// Largest absolute frame number accepted.
pub const MAX_FRAME: i64 = 1_000_000_000;
/// Most frames in one publish (≈ 11.5 hours at 24 fps): guards against a typo
/// turning into a billion-frame copy.
pub const MAX_FRAMES: i64 = 1_000_000;
/// Widest frame-number padding accepted in `pad`.
pub const MAX_PAD: usize = 12;
/// Longest `scan_path` (bytes).
const MAX_PATH_LEN: usize = 4096;
/// Longest `scan_name` (bytes; a file-name limit).
const MAX_FILE_NAME_LEN: usize = 255;

/// How to plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Allow publishing into a version that already exists (frames folder not empty,
    /// or registered in the tracker). Each such publish is logged and listed in
    /// [`Plan::warnings`].
    pub force: bool,
    /// Publish every group as this version, whatever the rows say.
    pub version_override: Option<u32>,
    /// When set, every `scan_path` must lie inside this folder.
    pub delivery_root: Option<PathBuf>,
    /// Scan colour space of every group; else the project's
    /// (`colour.projects.<project>.colorspace`), else `colour.default_colorspace`.
    pub colorspace: Option<String>,
    /// Movie plates as frames ("MOV to DPX"), instead of `publish.movie_frames` /
    /// `publish.project_movie_frames`; `Some(MovieFrames(None))` keeps the movies.
    /// `editor` rows always keep the movie, as in the original.
    pub movie_frames: Option<MovieFrames>,
}

/// The result of planning: one graph per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Validated graphs, in order of the groups' first rows.
    pub graphs: Vec<Graph>,
    /// Rows not planned, and why (unchecked rows); informational.
    pub skipped: Vec<String>,
    /// Things the user should know that did not stop the plan (forced overwrites).
    pub warnings: Vec<String>,
    /// Groups that continue an unfinished earlier publish of the same rows and
    /// version instead of taking a new version, or that replace an earlier plan
    /// of their version, and why; informational.
    pub notes: Vec<String>,
    /// Earlier publishes (same graph ids, other manifests) that published
    /// nothing and are not running, which this plan replaces: the caller moves
    /// their work folders aside ([`crate::store::WorkDir::supersede`]) before
    /// creating the new ones.
    pub replaces: Vec<GraphId>,
}

/// An earlier publish of a planned graph, as the caller of [`plan_numbered`]
/// finds it in the graph's work folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierPublish {
    /// Its state (`running`, `failed`, `interrupted`, …).
    pub state: String,
    /// Whether it did not finish (not `succeeded`).
    pub unfinished: bool,
    /// Whether something runs or may still run it (`running`: on the farm's
    /// queues, or in an in-process run).
    pub running: bool,
    /// Whether its manifest is the planned graph itself (same rows, settings,
    /// version), so continuing it publishes exactly this plan.
    pub same: bool,
}

/// What the tracker is asked about when looking for existing versions: the
/// original's PublishedFile is named `<shot>_<type>` within the project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishInfoKey {
    /// Project name.
    pub project: String,
    /// Sequence code.
    pub seq: String,
    /// Shot code.
    pub shot: String,
    /// Seq type.
    pub seq_type: String,
}

impl PublishInfoKey {
    /// The key of a publish.
    pub fn of(info: &PublishInfo) -> Self {
        PublishInfoKey {
            project: info.project.clone(),
            seq: info.seq.clone(),
            shot: info.shot.clone(),
            seq_type: info.seq_type.clone(),
        }
    }
}

/// One problem with one scanlist row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RowError {
    /// 1-based sheet row: the header is row 1, the first data row is row 2.
    pub row: usize,
    /// The column at fault, when one is (`None` for layout-template problems and
    /// conflicts between groups).
    pub column: Option<&'static str>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "row {}, column {c}: {}", self.row, self.message),
            None => write!(f, "row {}: {}", self.row, self.message),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Rows that cannot be published, all of them; nothing was planned.
    #[error("{}", rows_message(.0))]
    Rows(Vec<RowError>),
    /// A folder could not be read while looking for versions.
    #[error("cannot read {path} while planning the publish: {source}; check that the storage is mounted and readable, then plan again")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A built graph is malformed (a planner bug).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A layout template cannot be rendered.
    #[error("template {template:?}: {message}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A setting or option the planner needs is unusable.
    #[error("bad setting `{key}`: {message}")]
    Settings {
        /// Key path (`publish.frames_dir`) or option (`--colorspace`).
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

fn rows_message(errors: &[RowError]) -> String {
    let mut s = format!(
        "{} problem{} in the scanlist; nothing was published, fix the rows and publish again:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    s
}

impl Classify for PlanError {
    fn class(&self) -> ErrorClass {
        match self {
            PlanError::Io { source, .. } => crate::error::io_class(source),
            _ => ErrorClass::Permanent,
        }
    }
}

impl PlanError {
    /// The row errors, when this is [`PlanError::Rows`].
    pub fn row_errors(&self) -> &[RowError] {
        match self {
            PlanError::Rows(v) => v,
            _ => &[],
        }
    }
}

// ---------------------------------------------------------------------------
// Templates

/// Values of the layout placeholders. `version`, `plate` and `graph` are unknown
/// while the version itself is being looked for; a template that needs them then
/// fails to render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// `{seq}`: the sequence code.
    pub seq: String,
    /// `{shot}`: the shot code.
    pub shot: String,
    /// `{type}`: the seq type.
    pub seq_type: String,
    /// `{version}`: rendered `v001`.
    pub version: Option<u32>,
    /// `{plate}`: the plate name.
    pub plate: Option<String>,
    /// `{graph}`: the graph id.
    pub graph: Option<String>,
}

/// The placeholders a layout template may use.
pub const PLACEHOLDERS: [&str; 6] = ["seq", "shot", "type", "version", "plate", "graph"];

/// Renders a layout template: `{seq}`, `{shot}`, `{type}`, `{version}` (`v001`),
/// `{plate}` and `{graph}` are replaced; `{{` and `}}` are literal braces. An unknown
/// placeholder, an unclosed brace or a placeholder whose value is not known yet is an
/// error.
pub fn render_template(template: &str, vars: &TemplateVars) -> Result<String, PlanError> {
    let err = |message: String| PlanError::Template {
        template: template.to_string(),
        message,
    };
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let brace = rest.as_bytes()[pos];
        let after = &rest[pos + 1..];
        if brace == b'}' {
            let Some(a) = after.strip_prefix('}') else {
                return Err(err(
                    "unmatched `}`; write `}}` for a literal brace".to_string()
                ));
            };
            out.push('}');
            rest = a;
            continue;
        }
        if let Some(a) = after.strip_prefix('{') {
            out.push('{');
            rest = a;
            continue;
        }
        let Some(end) = after.find('}') else {
            return Err(err(
                "unclosed `{`; write `{{` for a literal brace".to_string()
            ));
        };
        let name = &after[..end];
        let missing = |what: &str| {
            err(format!(
                "{{{name}}} cannot be used here: the {what} is not known yet"
            ))
        };
        match name {
            "seq" => out.push_str(&vars.seq),
            "shot" => out.push_str(&vars.shot),
            "type" => out.push_str(&vars.seq_type),
            "version" => match vars.version {
                Some(v) => out.push_str(&version_label(v)),
                None => return Err(missing("version")),
            },
            "plate" => match &vars.plate {
                Some(p) => out.push_str(p),
                None => return Err(missing("plate name")),
            },
            "graph" => match &vars.graph {
                Some(g) => out.push_str(g),
                None => return Err(missing("graph id")),
            },
            other => {
                return Err(err(format!(
                    "unknown placeholder {{{other}}}; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                )))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `v001`, as the folders and plate names spell versions.
pub fn version_label(v: u32) -> String {
    format!("v{v:03}")
}

/// The version-folder part of `publish.frames_dir`, split so the existing versions
/// can be listed before the version is known: the folder holding the versions
/// (`seq/{seq}/{shot}/plate/{type}`) and the text before `{version}` in its
/// component (usually empty).
#[derive(Debug, Clone)]
struct VersionSeries {
    parent: String,
    prefix: String,
}

impl VersionSeries {
    fn of(frames_dir: &str) -> Option<VersionSeries> {
        let comps: Vec<&str> = frames_dir.split('/').collect();
        let k = comps.iter().position(|c| c.contains("{version}"))?;
        let comp = comps[k];
        let at = comp.find("{version}")?;
        Some(VersionSeries {
            parent: comps[..k].join("/"),
            prefix: comp[..at].to_string(),
        })
    }
}

/// The `publish:` templates, checked once.
struct Layout {
    root: PathBuf,
    series: VersionSeries,
}

/// Checks the templates and settings the planner depends on.
fn check_settings(settings: &Settings) -> Result<Layout, PlanError> {
    let p = &settings.publish;
    let bad = |key: &str, message: String| PlanError::Settings {
        key: key.to_string(),
        message,
    };
    let full = TemplateVars {
        seq: "SEQ".into(),
        shot: "SEQ_0010".into(),
        seq_type: "org".into(),
        version: Some(1),
        plate: Some("SEQ_0010_org_v001".into()),
        graph: Some("SEQ_0010_org_v001-00000000".into()),
    };
    let no_plate = TemplateVars {
        plate: None,
        ..full.clone()
    };
    for (key, t, vars) in [
        ("publish.frames_dir", &p.frames_dir, &full),
        ("publish.plate_dir", &p.plate_dir, &full),
        ("publish.jpg_dir", &p.jpg_dir, &full),
        ("publish.jpg_2k_dir", &p.jpg_2k_dir, &full),
        ("publish.work_dir", &p.work_dir, &full),
        // The plate name cannot contain itself.
        ("publish.plate_name", &p.plate_name, &no_plate),
    ] {
        render_template(t, vars).map_err(|e| bad(key, e.to_string()))?;
    }
    if !p.frames_dir.contains("{version}") {
        return Err(bad(
            "publish.frames_dir",
            format!(
                "{:?} has no {{version}}: every version would publish into the same folder; \
                 add {{version}} (default: seq/{{seq}}/{{shot}}/plate/{{type}}/{{version}})",
                p.frames_dir
            ),
        ));
    }
    if !p.work_dir.contains("{graph}") {
        return Err(bad(
            "publish.work_dir",
            format!(
                "{:?} has no {{graph}}: publishes would share one work folder; add {{graph}} \
                 (default: .iom/publishes/{{graph}})",
                p.work_dir
            ),
        ));
    }
    let series = VersionSeries::of(&p.frames_dir).ok_or_else(|| {
        bad(
            "publish.frames_dir",
            "cannot find the {version} component".into(),
        )
    })?;
    // The folder holding the versions must not depend on the version.
    let partial = TemplateVars {
        version: None,
        plate: None,
        graph: None,
        ..full.clone()
    };
    for part in [&series.parent, &series.prefix] {
        render_template(part, &partial).map_err(|e| {
            bad(
                "publish.frames_dir",
                format!(
                    "the folders before {{version}} may use only {{seq}}, {{shot}} and {{type}}: {e}"
                ),
            )
        })?;
    }
    if !(0..=MAX_FRAME).contains(&p.first_frame) {
        return Err(bad(
            "publish.first_frame",
            format!("{} is outside 0..={MAX_FRAME}", p.first_frame),
        ));
    }
    if !(1..=MAX_PAD).contains(&p.pad) {
        return Err(bad(
            "publish.pad",
            format!("{} is outside 1..={MAX_PAD}", p.pad),
        ));
    }
    let root = &settings.project.root;
    if root.as_os_str().is_empty() {
        return Err(bad(
            "project.root",
            "is empty; set it to the project folder".into(),
        ));
    }
    // A relative root is taken from the current folder, once, here: every path
    // in the graph is absolute so workers on other hosts agree on it.
    let abs = std::path::absolute(root).map_err(|e| {
        bad(
            "project.root",
            format!("cannot make {} absolute: {e}", root.display()),
        )
    })?;
    Ok(Layout {
        root: normalise(&abs),
        series,
    })
}

/// The colour space of this plan (see [`PlanOptions::colorspace`]).
fn resolve_colorspace(settings: &Settings, opts: &PlanOptions) -> Result<String, PlanError> {
    let (key, name) = if let Some(c) = &opts.colorspace {
        ("--colorspace".to_string(), c.clone())
    } else if let Some(c) = settings
        .colour
        .projects
        .get(&settings.project.name)
        .and_then(|p| p.colorspace.clone())
    {
        (
            format!("colour.projects.{}.colorspace", settings.project.name),
            c,
        )
    } else {
        (
            "colour.default_colorspace".to_string(),
            settings.colour.default_colorspace.clone(),
        )
    };
    if !settings.colour.spaces.contains_key(&name) {
        return Err(PlanError::Settings {
            key,
            message: format!(
                "colour space {name:?} is not one of colour.spaces ({}); use one of those or add it",
                settings
                    .colour
                    .spaces
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(name)
}

// ---------------------------------------------------------------------------
// Paths

/// Lexical normalisation: drops `.`, resolves `..` against the preceding
/// component (never above the root).
pub fn normalise(p: &Path) -> PathBuf {
    crate::scanlist::read::normalise(p)
}

/// `root/rel`, normalised, refusing an absolute `rel` and any `..` that climbs
/// out of `root`. `allow_root` accepts `root` itself as the result.
fn join_under(root: &Path, rel: &str, allow_root: bool) -> Result<PathBuf, String> {
    if rel.contains('\0') {
        return Err("contains a NUL character".into());
    }
    let relp = Path::new(rel);
    if relp.has_root() || relp.is_absolute() {
        return Err(format!(
            "renders to the absolute path {rel:?}; templates must be relative to project.root"
        ));
    }
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in relp.components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(format!(
                        "renders to {rel:?}, which leaves the project root {}",
                        root.display()
                    ));
                }
                out.pop();
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("renders to the absolute path {rel:?}"));
            }
        }
    }
    if depth == 0 && !allow_root {
        return Err(format!(
            "renders to {rel:?}, which is the project root itself; it must name a folder below it"
        ));
    }
    Ok(out)
}

/// Why `name` is not a plain path component for shot, seq or type names, or `None`.
pub fn bad_component(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') {
        return Some(format!("{name:?} starts with `.`"));
    }
    if name.contains("..") {
        return Some(format!("{name:?} contains `..`"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!(
            "{name:?} contains {c:?}; only letters, digits, `_`, `.` and `-` are allowed in names that become folders"
        ));
    }
    None
}

/// Why `name` is not a usable source file name (sequence head or movie file), or
/// `None`. Looser than [`bad_component`]: this is a real delivery file name that
/// never becomes an output path, so spaces and other characters are accepted.
fn bad_file_name(name: &str) -> Option<String> {
    if name.len() > MAX_FILE_NAME_LEN {
        return Some(format!("is longer than {MAX_FILE_NAME_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a file name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Some(format!(
            "{name:?} contains {c:?}; it must be a file name, not a path"
        ));
    }
    None
}

/// Width of a printf padding (`%04d` → 4, `%d` → 1).
fn parse_pad(pad: &str) -> Option<usize> {
    if pad == "%d" {
        return Some(1);
    }
    let digits = pad.strip_prefix("%0")?.strip_suffix('d')?;
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<usize>()
        .ok()
        .filter(|w| (1..=MAX_PAD).contains(w))
}

// ---------------------------------------------------------------------------
// Rows

/// How the source is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Movie,
    Sequence { pad: usize },
}

/// A checked row that passed validation.
#[derive(Debug, Clone)]
struct ValidRow<'a> {
    line: usize,
    row: &'a Row,
    shot: String,
    seq: String,
    seq_type: String,
    scan_dir: PathBuf,
    ext: String,
    kind: Kind,
    just_in: i64,
    just_out: i64,
}

fn validate_row<'a>(
    line: usize,
    row: &'a Row,
    settings: &Settings,
    delivery_root: Option<&Path>,
) -> Result<ValidRow<'a>, Vec<RowError>> {
    let mut errs = Vec::new();
    let mut e = |column: &'static str, message: String| {
        errs.push(RowError {
            row: line,
            column: Some(column),
            message,
        })
    };

    // Names that become folders. Surrounding spaces are invisible in a
    // spreadsheet cell, so they are trimmed rather than refused.
    let shot = row.shot_name.trim().to_string();
    let mut seq = String::new();
    if let Some(why) = bad_component(&shot) {
        e(
            "shot_name",
            format!("the shot name {why}; type a shot code such as ABC_0010"),
        );
    } else {
        // The original's rule: the sequence is the text before the first `_`
        // (the seq_name column is ignored, as the original ignored it).
        seq = shot.split('_').next().unwrap_or("").to_string();
        if let Some(why) = bad_component(&seq) {
            e(
                "shot_name",
                format!(
                    "the sequence code (the text of {shot:?} before the first `_`) {why}; \
                     shot names look like SEQ_0010"
                ),
            );
        }
    }

    let seq_type = row.seq_type.trim().to_string();
    let allowed = &settings.publish.seq_types;
    if seq_type.is_empty() {
        e(
            "type",
            format!("the type is empty; use one of {}", allowed.join(", ")),
        );
    } else if !allowed.contains(&seq_type) {
        e(
            "type",
            format!(
                "type {seq_type:?} is not allowed; use one of {} (publish.seq_types)",
                allowed.join(", ")
            ),
        );
    } else if let Some(why) = bad_component(&seq_type) {
        e(
            "type",
            format!("type {why}; fix publish.seq_types in the settings"),
        );
    }

    // The source folder.
    let raw = row.scan_path.as_str();
    let mut scan_dir = PathBuf::new();
    if raw.trim().is_empty() {
        e(
            "scan_path",
            "scan_path is empty; it must be the absolute folder of the plate".into(),
        );
    } else if raw.len() > MAX_PATH_LEN {
        e(
            "scan_path",
            format!("scan_path is longer than {MAX_PATH_LEN} bytes"),
        );
    } else if raw.contains('\0') {
        e("scan_path", "scan_path contains a NUL character".into());
    } else if !Path::new(raw).is_absolute() {
        e(
            "scan_path",
            format!("scan_path {raw:?} is relative; it must be an absolute folder"),
        );
    } else if Path::new(raw)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        e(
            "scan_path",
            format!("scan_path {raw:?} contains `..`; write the folder without `..`"),
        );
    } else {
        scan_dir = normalise(Path::new(raw));
        if let Some(root) = delivery_root {
            if !scan_dir.starts_with(root) {
                e(
                    "scan_path",
                    format!(
                        "scan_path {} is outside the delivery {}; publish only plates of this delivery",
                        scan_dir.display(),
                        root.display()
                    ),
                );
            }
        }
    }

    // Extension and kind.
    let ext = row.ext.trim().to_ascii_lowercase();
    let is_movie = MOVIE_EXTENSIONS.contains(&ext.as_str())
        || settings
            .scan
            .movie_extensions
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&ext));
    let ext_ok =
        !ext.is_empty() && ext.len() <= 16 && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ext_ok {
        e(
            "ext",
            format!(
                "ext {:?} is not a file extension (letters and digits, e.g. exr, dpx, mov)",
                row.ext
            ),
        );
    }

    let scan_name = row.scan_name.as_str();
    if let Some(why) = bad_file_name(scan_name) {
        e("scan_name", format!("scan_name {why}"));
    } else if is_movie && ext_ok {
        let ok = scan_name
            .rsplit_once('.')
            .is_some_and(|(stem, x)| !stem.is_empty() && x.eq_ignore_ascii_case(&ext));
        if !ok {
            e(
                "scan_name",
                format!(
                    "scan_name {scan_name:?} is not a .{ext} file name; for a movie it is the file name"
                ),
            );
        }
    }

    let kind = if is_movie {
        Kind::Movie
    } else {
        let pad_text = row.pad.trim();
        match parse_pad(pad_text) {
            Some(pad) => Kind::Sequence { pad },
            None => {
                e(
                    "pad",
                    format!(
                        "pad {pad_text:?} is not a printf frame padding like %04d (1 to {MAX_PAD} digits)"
                    ),
                );
                Kind::Sequence { pad: 4 }
            }
        }
    };

    // Frames.
    let lowest = if is_movie { 1 } else { 0 };
    let mut frame = |column: &'static str, v: Option<i64>, required: bool| -> Option<i64> {
        match v {
            None if required => {
                e(
                    column,
                    format!("{column} is empty; it must be a frame number"),
                );
                None
            }
            None => None,
            Some(n) if !(lowest..=MAX_FRAME).contains(&n) => {
                e(
                    column,
                    format!(
                        "{column} {n} is out of range {lowest}..={MAX_FRAME}{}",
                        if is_movie {
                            " (movie frames count from 1)"
                        } else {
                            ""
                        }
                    ),
                );
                None
            }
            Some(n) => Some(n),
        }
    };
    let start = frame("start_frame", row.start_frame, true);
    let end = frame("end_frame", row.end_frame, false);
    let just_in = frame("just_in", row.just_in, true);
    let just_out = frame("just_out", row.just_out, true);
    if let (Some(i), Some(o)) = (just_in, just_out) {
        if i > o {
            e(
                "just_in",
                format!("just_in {i} is after just_out {o}; swap them or fix the range"),
            );
        } else if o - i + 1 > MAX_FRAMES {
            e(
                "just_out",
                format!(
                    "just_in {i} to just_out {o} is {} frames, more than the {MAX_FRAMES} a publish may hold",
                    o - i + 1
                ),
            );
        }
    }
    if let (Some(s), Some(i)) = (start, just_in) {
        if i < s {
            e(
                "just_in",
                format!("just_in {i} is before start_frame {s}, the first frame of the scan"),
            );
        }
    }
    if let (Some(end), Some(o)) = (end, just_out) {
        if o > end {
            e(
                "just_out",
                format!("just_out {o} is after end_frame {end}, the last frame of the scan"),
            );
        }
    }

    if let Some(v) = row.version {
        if !(1..=MAX_VERSION).contains(&v) {
            e(
                "version",
                format!(
                    "version {v} is outside 1..={MAX_VERSION}; leave it empty for the next one"
                ),
            );
        }
    }
    if let Some(d) = row.retime_duration {
        if !(1..=MAX_FRAMES).contains(&d) {
            e(
                "retime_duration",
                format!("retime_duration {d} is outside 1..={MAX_FRAMES}"),
            );
        }
    }
    if let Some(s) = row.retime_start_frame {
        if !(-MAX_FRAME..=MAX_FRAME).contains(&s) {
            e(
                "retime_start_frame",
                format!("retime_start_frame {s} is out of range"),
            );
        }
    }
    if let Some(p) = row.retime_percent {
        if !p.is_finite() || p == 0.0 || p.abs() > 100_000.0 {
            e(
                "retime_percent",
                format!("retime_percent {p} must be a non-zero speed within ±100000"),
            );
        }
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ValidRow {
        line,
        row,
        shot,
        seq,
        seq_type,
        scan_dir,
        ext,
        kind,
        // Present: a missing value was reported above.
        just_in: just_in.unwrap_or(0),
        just_out: just_out.unwrap_or(0),
    })
}

/// The original's group key (original-app.md §5).
fn group_key(r: &ValidRow<'_>) -> String {
    let version = r
        .row
        .version
        .map(|v| v.to_string())
        .unwrap_or_else(|| "auto".into());
    format!("{}_{}_{}_{}", r.shot, r.row.scan_name, r.seq_type, version)
}

/// Rows of one group must describe one source.
fn check_group_consistency(rows: &[ValidRow<'_>]) -> Vec<RowError> {
    let mut out = Vec::new();
    let first = &rows[0];
    // A row repeated cell for cell is a copy-paste slip, not a retime variant
    // (those differ in their ranges or retime columns): name both rows.
    for (i, r) in rows.iter().enumerate().skip(1) {
        if let Some(same) = rows[..i].iter().find(|o| *o.row == *r.row) {
            out.push(RowError {
                row: r.line,
                column: None,
                message: format!(
                    "repeats row {} cell for cell ({} {} {}); delete one of the two rows",
                    same.line, r.shot, r.row.scan_name, r.seq_type
                ),
            });
        }
    }
    for r in &rows[1..] {
        let mut differs = |column: &'static str, what: String| {
            out.push(RowError {
                row: r.line,
                column: Some(column),
                message: format!(
                    "{what} differs from row {} of the same group ({} {} {}); rows of one \
                     retime group must come from the same scan",
                    first.line, first.shot, first.row.scan_name, first.seq_type
                ),
            })
        };
        if r.scan_dir != first.scan_dir {
            differs("scan_path", format!("scan_path {}", r.scan_dir.display()));
        }
        if r.ext != first.ext {
            differs("ext", format!("ext {:?}", r.ext));
        }
        if r.kind != first.kind {
            differs("pad", format!("pad {:?}", r.row.pad));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Planning

/// Plans a publish of `rows` (sheet rows 2, 3, … in order; see [`plan_numbered`]
/// when rows were skipped while reading).
///
/// `existing_versions` returns the versions the tracker knows for a shot and type
/// (`|_| vec![]` for none); it is called once per distinct key.
///
/// Retime groups get one [`Retime`] per row in [`PublishInfo::retimes`]; the graph
/// is the same shape as a plain publish for now: copying the group's whole frame
/// range. Rendering the retime itself belongs to the media steps (a later issue).
pub fn plan(
    rows: &[Row],
    settings: &Settings,
    opts: &PlanOptions,
    existing_versions: &dyn Fn(&PublishInfoKey) -> Vec<u32>,
) -> Result<Plan, PlanError> {
    let numbered: Vec<(usize, &Row)> = rows.iter().enumerate().map(|(i, r)| (i + 2, r)).collect();
    plan_inner(&numbered, settings, opts, existing_versions, &|_| None)
}

/// The scanlist column an explicit version came from: none when `--version`
/// set it.
fn version_column(opts: &PlanOptions) -> Option<&'static str> {
    opts.version_override.is_none().then_some("version")
}

/// How to ask for the next free version instead of an existing one.
fn next_version_hint(opts: &PlanOptions) -> &'static str {
    if opts.version_override.is_some() {
        "drop --version for the next one"
    } else {
        "leave `version` empty for the next one"
    }
}

/// [`plan`] with the sheet row number of each row given (header = row 1), and
/// `earlier` telling what an earlier publish of a graph left in its work folder
/// (`None`: no work folder). A group whose last version (on disk or in the
/// tracker), or whose explicit version, is the same graph published before and
/// not finished continues that publish (the same graph, no `--force` needed)
/// instead of taking the next version: publishing the same rows again after a
/// failure finishes what was started instead of leaving a half-published version
/// behind. [`Plan::notes`] says which.
pub fn plan_numbered(
    rows: &[(usize, Row)],
    settings: &Settings,
    opts: &PlanOptions,
    existing_versions: &dyn Fn(&PublishInfoKey) -> Vec<u32>,
    earlier: &dyn Fn(&Graph) -> Option<EarlierPublish>,
) -> Result<Plan, PlanError> {
    let numbered: Vec<(usize, &Row)> = rows.iter().map(|(n, r)| (*n, r)).collect();
    plan_inner(&numbered, settings, opts, existing_versions, earlier)
}

/// One group after the version is chosen.
struct Planned<'a> {
    rows: Vec<ValidRow<'a>>,
    version: u32,
    /// This version is an unfinished earlier publish of the same graph, which
    /// this plan continues.
    continued: bool,
}

fn plan_inner(
    rows: &[(usize, &Row)],
    settings: &Settings,
    opts: &PlanOptions,
    existing_versions: &dyn Fn(&PublishInfoKey) -> Vec<u32>,
    earlier: &dyn Fn(&Graph) -> Option<EarlierPublish>,
) -> Result<Plan, PlanError> {
    let layout = check_settings(settings)?;
    let colorspace = resolve_colorspace(settings, opts)?;
    if let Some(v) = opts.version_override {
        if !(1..=MAX_VERSION).contains(&v) {
            return Err(PlanError::Settings {
                key: "--version".into(),
                message: format!("{v} is outside 1..={MAX_VERSION}"),
            });
        }
    }
    let delivery_root = match &opts.delivery_root {
        Some(r) => Some(normalise(&std::path::absolute(r).map_err(|e| {
            PlanError::Settings {
                key: "--delivery".into(),
                message: format!("cannot make {} absolute: {e}", r.display()),
            }
        })?)),
        None => None,
    };
    let project = settings.project.name.as_str();

    // 1. Rows.
    let mut errors: Vec<RowError> = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut groups: Vec<Vec<ValidRow<'_>>> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for &(line, row) in rows {
        if !row.check {
            let what: Vec<&str> = [
                row.shot_name.trim(),
                row.seq_type.trim(),
                row.scan_name.trim(),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
            skipped.push(format!("row {line}: not checked ({})", what.join(" ")));
            continue;
        }
        match validate_row(line, row, settings, delivery_root.as_deref()) {
            Ok(v) => {
                let key = group_key(&v);
                let i = *by_key.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[i].push(v);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    for g in &groups {
        errors.extend(check_group_consistency(g));
    }

    // 2. Versions. Explicit versions first, so an automatic one never takes a
    // number another group of this plan asks for.
    let series_of = |r: &ValidRow<'_>| -> Result<(PathBuf, String), String> {
        let vars = base_vars(r);
        // The templates were checked: these render.
        let parent = render_template(&layout.series.parent, &vars).map_err(|e| e.to_string())?;
        let prefix = render_template(&layout.series.prefix, &vars).map_err(|e| e.to_string())?;
        let dir = join_under(&layout.root, &parent, true)
            .map_err(|m| format!("publish.frames_dir {m}; fix the template in the settings"))?;
        Ok((dir, prefix))
    };
    let mut claimed: BTreeMap<(PathBuf, String), BTreeSet<u32>> = BTreeMap::new();
    let mut series: Vec<Option<(PathBuf, String)>> = Vec::with_capacity(groups.len());
    for g in &groups {
        let first = &g[0];
        match series_of(first) {
            Ok(s) => {
                if let Some(v) = opts.version_override.or(first.row.version) {
                    claimed.entry(s.clone()).or_default().insert(v);
                }
                series.push(Some(s));
            }
            Err(message) => {
                errors.push(RowError {
                    row: first.line,
                    column: None,
                    message,
                });
                series.push(None);
            }
        }
    }
    let frames_of = |first: &ValidRow<'_>| match first.kind {
        Kind::Movie if first.seq_type != "editor" => {
            opts.movie_frames
                .unwrap_or(MovieFrames(settings.publish.movie_frames_for(project)))
                .0
        }
        _ => None,
    };
    // What an earlier publish of this group as this version left: `None` when
    // there is none (or the version cannot even be rendered: step 3 says why).
    let paths_of = |p: &Planned<'_>| {
        let first = &p.rows[0];
        render_paths(
            settings,
            &layout,
            first,
            p.version,
            project,
            frames_of(first),
        )
    };
    let earlier_of = |p: &Planned<'_>| -> Option<(EarlierPublish, GraphId)> {
        let paths = paths_of(p).ok()?;
        let graph = build_graph(settings, p, paths, project, &colorspace).ok()?;
        earlier(&graph).map(|e| (e, graph.id))
    };
    let mut notes = Vec::new();
    let mut replaces = Vec::new();
    // The last version published, when it is these rows' own unfinished
    // publish: continue it. Planned differently since: say so, and take the next.
    let mut continue_if_same =
        |p: &mut Planned<'_>, found: Option<(EarlierPublish, GraphId)>, notes: &mut Vec<String>| {
            let first = &p.rows[0];
            match found {
                Some((e, id)) if e.unfinished && e.same => {
                    p.continued = true;
                    notes.push(format!(
                        "row {}: continuing {} of {} {} (publish {id}, {}): it was published \
                         from these rows before and did not finish",
                        first.line,
                        version_label(p.version),
                        first.shot,
                        first.seq_type,
                        e.state
                    ));
                }
                Some((e, id)) if e.unfinished => warnings.push(format!(
                    "row {}: the earlier publish {id} of {} {} {} did not finish ({}) and \
                     was planned differently (the rows or settings changed since), so it is \
                     not continued; `iom resume {id} --retry-failed` finishes it as it was planned",
                    first.line,
                    first.shot,
                    first.seq_type,
                    version_label(p.version),
                    e.state
                )),
                _ => {}
            }
        };
    // The version this plan takes was planned before differently (the same ids,
    // another manifest: the rows or settings changed after a publish that
    // published nothing, or --force): this plan replaces that one, unless it is
    // still running.
    let mut replace_if_other = |p: &Planned<'_>,
                                found: Option<(EarlierPublish, GraphId)>,
                                errors: &mut Vec<RowError>,
                                notes: &mut Vec<String>| {
        let first = &p.rows[0];
        let Some((e, id)) = found.filter(|(e, _)| !e.same) else {
            return;
        };
        if e.running {
            errors.push(RowError {
                row: first.line,
                column: None,
                message: format!(
                    "{} of {} {} is being published now from other rows or settings \
                     (publish {id}, running); wait for it to finish, or stop it, then \
                     publish again",
                    version_label(p.version),
                    first.shot,
                    first.seq_type
                ),
            });
            return;
        }
        notes.push(format!(
            "row {}: {} of {} {} was planned before from other rows or settings \
             (publish {id}, {}); this publish replaces that plan (its work folder is \
             kept under .superseded)",
            first.line,
            version_label(p.version),
            first.shot,
            first.seq_type,
            e.state
        ));
        replaces.push(id);
    };
    let mut disk_cache: BTreeMap<(PathBuf, String), u32> = BTreeMap::new();
    let mut tracker_cache: BTreeMap<PublishInfoKey, Vec<u32>> = BTreeMap::new();
    let mut planned: Vec<Planned<'_>> = Vec::new();
    for (g, s) in groups.into_iter().zip(series) {
        let Some(s) = s else { continue };
        let first = &g[0];
        let key = PublishInfoKey {
            project: project.to_string(),
            seq: first.seq.clone(),
            shot: first.shot.clone(),
            seq_type: first.seq_type.clone(),
        };
        let tracker = tracker_cache
            .entry(key.clone())
            .or_insert_with(|| existing_versions(&key))
            .clone();
        let explicit = opts.version_override.or(first.row.version);
        let (line, shot, seq_type) = (first.line, first.shot.clone(), first.seq_type.clone());
        let mut p = Planned {
            rows: g,
            version: 0,
            continued: false,
        };
        match explicit {
            Some(v) => {
                p.version = v;
                let found = earlier_of(&p);
                if found.as_ref().is_some_and(|(e, _)| e.same) {
                    continue_if_same(&mut p, found, &mut notes);
                } else {
                    replace_if_other(&p, found, &mut errors, &mut notes);
                }
                if tracker.contains(&v) && !opts.force && !p.continued {
                    errors.push(RowError {
                        row: line,
                        column: version_column(opts),
                        message: format!(
                            "version {} of {shot} {seq_type} is already registered in the tracker; publish as \
                             a new version ({}) or pass --force",
                            version_label(v),
                            next_version_hint(opts)
                        ),
                    });
                }
            }
            None => {
                let disk = match disk_cache.get(&s) {
                    Some(v) => *v,
                    None => {
                        let v = highest_on_disk(&s.0, &s.1)?;
                        disk_cache.insert(s.clone(), v);
                        v
                    }
                };
                let in_plan = claimed.get(&s).and_then(|c| c.last().copied()).unwrap_or(0);
                let published = tracker.iter().copied().max().unwrap_or(0).max(disk);
                // No other group of this plan takes the last version published.
                if published > in_plan {
                    p.version = published;
                    let found = earlier_of(&p);
                    continue_if_same(&mut p, found, &mut notes);
                }
                if !p.continued {
                    let next = published.max(in_plan).saturating_add(1);
                    if next > MAX_VERSION {
                        errors.push(RowError {
                            row: line,
                            column: Some("version"),
                            message: format!(
                                "the next version of {shot} {seq_type} would be {next}, above {MAX_VERSION}"
                            ),
                        });
                        continue;
                    }
                    p.version = next;
                    let found = earlier_of(&p);
                    if found.as_ref().is_some_and(|(e, _)| e.same) {
                        // These rows' own publish of a version nothing was
                        // published into yet (it failed or stopped early).
                        continue_if_same(&mut p, found, &mut notes);
                    } else {
                        replace_if_other(&p, found, &mut errors, &mut notes);
                    }
                }
                claimed.entry(s.clone()).or_default().insert(p.version);
            }
        }
        planned.push(p);
    }

    // 3. Paths, existing versions, collisions.
    let mut built: Vec<(Planned<'_>, Paths)> = Vec::new();
    for p in planned {
        let first = &p.rows[0];
        let paths = match paths_of(&p) {
            Ok(x) => x,
            Err(message) => {
                errors.push(RowError {
                    row: first.line,
                    column: None,
                    message,
                });
                continue;
            }
        };
        if let Some(found) = non_empty(&paths.output.frames_dir)?.filter(|_| !p.continued) {
            if opts.force {
                let msg = format!(
                    "row {}: publishing into the existing version {} of {} {} at {} ({found}) because of --force",
                    first.line,
                    version_label(p.version),
                    first.shot,
                    first.seq_type,
                    paths.output.frames_dir.display()
                );
                tracing::warn!(graph = %paths.id, "{msg}");
                warnings.push(msg);
            } else {
                errors.push(RowError {
                    row: first.line,
                    column: version_column(opts),
                    message: format!(
                        "version {} of {} {} already exists at {}; publish as a new version \
                         ({}) or pass --force",
                        version_label(p.version),
                        first.shot,
                        first.seq_type,
                        paths.output.frames_dir.display(),
                        next_version_hint(opts)
                    ),
                });
            }
        }
        built.push((p, paths));
    }
    let mut by_dir: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, (_, paths)) in built.iter().enumerate() {
        by_dir
            .entry(paths.output.frames_dir.as_path())
            .or_default()
            .push(i);
    }
    for (dir, idx) in &by_dir {
        if idx.len() < 2 {
            continue;
        }
        for &i in idx {
            let first = &built[i].0.rows[0];
            let others: Vec<String> = idx
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| built[j].0.rows[0].line.to_string())
                .collect();
            errors.push(RowError {
                row: first.line,
                column: Some("version"),
                message: format!(
                    "publishes into {} like row {}; give the groups different versions",
                    dir.display(),
                    others.join(", row ")
                ),
            });
        }
    }

    if !errors.is_empty() {
        errors.sort_by_key(|e| e.row);
        return Err(PlanError::Rows(errors));
    }

    // 4. Graphs.
    let mut graphs = Vec::with_capacity(built.len());
    for (p, paths) in built {
        graphs.push(build_graph(settings, &p, paths, project, &colorspace)?);
    }
    Ok(Plan {
        graphs,
        skipped,
        warnings,
        notes,
        replaces,
    })
}

fn base_vars(r: &ValidRow<'_>) -> TemplateVars {
    TemplateVars {
        seq: r.seq.clone(),
        shot: r.shot.clone(),
        seq_type: r.seq_type.clone(),
        version: None,
        plate: None,
        graph: None,
    }
}

/// Highest `v###` among the entries of `dir` whose names start with
/// `prefix` + `v` + digits (0 when none, or when `dir` does not exist).
fn highest_on_disk(dir: &Path, prefix: &str) -> Result<u32, PlanError> {
    let io = |source| PlanError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut best = 0u32;
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('v')) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            continue;
        }
        // A silly `v99999999999` saturates, and then the version is refused as too high.
        let v = digits.parse::<u64>().unwrap_or(u64::MAX);
        best = best.max(u32::try_from(v).unwrap_or(u32::MAX));
    }
    Ok(best)
}

/// `Some(description)` when `dir` exists and holds anything (or is not a folder).
fn non_empty(dir: &Path) -> Result<Option<String>, PlanError> {
    let io = |source| PlanError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
        Ok(m) if !m.is_dir() => Ok(Some("a file, not a folder".into())),
        Ok(_) => {
            let mut n = 0usize;
            for entry in std::fs::read_dir(dir).map_err(io)? {
                entry.map_err(io)?;
                n += 1;
            }
            Ok((n > 0).then(|| format!("{n} entr{}", if n == 1 { "y" } else { "ies" })))
        }
    }
}

/// The rendered, checked output paths of one group.
struct Paths {
    id: GraphId,
    output: PlateOutput,
    work_dir: PathBuf,
    /// A movie plate published as frames in this format.
    frames: Option<FrameFormat>,
}

fn render_paths(
    settings: &Settings,
    layout: &Layout,
    first: &ValidRow<'_>,
    version: u32,
    project: &str,
    frames: Option<FrameFormat>,
) -> Result<Paths, String> {
    let p = &settings.publish;
    let id = graph_id(
        project,
        &first.shot,
        &first.row.scan_name,
        &first.seq_type,
        version,
    );
    let mut vars = base_vars(first);
    vars.version = Some(version);
    vars.graph = Some(id.0.clone());
    // The templates were checked at the start, so these only fail on a planner bug.
    let render = |key: &str, t: &str, vars: &TemplateVars| {
        render_template(t, vars).map_err(|e| format!("{key}: {e}"))
    };
    let plate = render("publish.plate_name", &p.plate_name, &vars)?;
    if let Some(why) = bad_component(&plate) {
        return Err(format!(
            "publish.plate_name renders to a plate name that {why}; fix the template in the settings"
        ));
    }
    vars.plate = Some(plate.clone());
    let dir = |key: &str, t: &str| -> Result<PathBuf, String> {
        let rel = render(key, t, &vars)?;
        join_under(&layout.root, &rel, false)
            .map_err(|m| format!("{key} {m}; fix the template in the settings"))
    };
    let output = PlateOutput {
        frames_dir: dir("publish.frames_dir", &p.frames_dir)?,
        plate_name: plate,
        ext: frames.map_or_else(|| first.ext.clone(), |f| f.ext().to_string()),
        first_frame: p.first_frame,
        pad: p.pad,
        plate_dir: dir("publish.plate_dir", &p.plate_dir)?,
        jpg_dir: dir("publish.jpg_dir", &p.jpg_dir)?,
        jpg_2k_dir: dir("publish.jpg_2k_dir", &p.jpg_2k_dir)?,
    };
    let work_dir = dir("publish.work_dir", &p.work_dir)?;
    Ok(Paths {
        id,
        output,
        work_dir,
        frames,
    })
}

/// The source of a group: the whole `min(just_in)..=max(just_out)` range.
fn source_of(rows: &[ValidRow<'_>]) -> Source {
    let first = &rows[0];
    let lo = rows
        .iter()
        .map(|r| r.just_in)
        .min()
        .unwrap_or(first.just_in);
    let hi = rows
        .iter()
        .map(|r| r.just_out)
        .max()
        .unwrap_or(first.just_out);
    match first.kind {
        Kind::Movie => Source::Movie {
            path: first.scan_dir.join(&first.row.scan_name),
            first: lo,
            last: hi,
        },
        Kind::Sequence { pad } => {
            let mut src = Source::Sequence {
                dir: first.scan_dir.clone(),
                head: first.row.scan_name.clone(),
                pad,
                ext: first.ext.clone(),
                first: lo,
                last: hi,
            };
            // The scanlist stores extensions in lower case; a delivery of `.EXR`
            // frames needs the case as on disk, or probe and copy find nothing.
            let lower_exists = src.frame_path(lo).is_some_and(|p| p.exists());
            if !lower_exists {
                let upper = first.ext.to_ascii_uppercase();
                let upper_src = match &src {
                    Source::Sequence {
                        dir,
                        head,
                        pad,
                        first,
                        last,
                        ..
                    } => Source::Sequence {
                        dir: dir.clone(),
                        head: head.clone(),
                        pad: *pad,
                        ext: upper,
                        first: *first,
                        last: *last,
                    },
                    Source::Movie { .. } => src.clone(),
                };
                if upper_src.frame_path(lo).is_some_and(|p| p.exists()) {
                    src = upper_src;
                }
            }
            src
        }
    }
}

fn info_of(p: &Planned<'_>, project: &str, colorspace: &str, source: &Source) -> PublishInfo {
    let rows = &p.rows;
    let first = &rows[0];
    let (lo, hi) = match source {
        Source::Sequence { first, last, .. } | Source::Movie { first, last, .. } => (*first, *last),
    };
    // Compared as strings, as the original (HH:MM:SS:FF sorts correctly); empty
    // cells are left out rather than winning the minimum.
    let tcs = |f: fn(&Row) -> &str| {
        rows.iter()
            .map(move |r| f(r.row).trim())
            .filter(|s| !s.is_empty())
    };
    let timecode_in = tcs(|r| &r.timecode_in).min().unwrap_or("").to_string();
    let timecode_out = tcs(|r| &r.timecode_out).max().unwrap_or("").to_string();
    // A group of several rows is a retime set; a single row is one when it has a
    // retime duration (the original's test on the group's first row).
    let retimes = if rows.len() > 1 || first.row.retime_duration.is_some() {
        rows.iter()
            .map(|r| Retime {
                just_in: r.just_in,
                just_out: r.just_out,
                start_frame: r.row.retime_start_frame,
                duration: r.row.retime_duration,
                percent: r.row.retime_percent,
            })
            .collect()
    } else {
        Vec::new()
    };
    PublishInfo {
        project: project.to_string(),
        seq: first.seq.clone(),
        shot: first.shot.clone(),
        seq_type: first.seq_type.clone(),
        version: p.version,
        scan_name: first.row.scan_name.clone(),
        clip_name: first.row.clip_name.clone(),
        colorspace: colorspace.to_string(),
        fps: first.row.framerate.filter(|f| f.is_finite() && *f > 0.0),
        resolution: first.row.resolution.clone(),
        timecode_in,
        timecode_out,
        just_in: lo,
        just_out: hi,
        retimes,
    }
}

/// The human label of a step, as the original's Tractor task titles where one
/// exists.
pub fn step_label(kind: StepKind, seq_type: &str) -> String {
    match kind {
        StepKind::Probe => "probe".into(),
        StepKind::Copy => format!("copy {seq_type}"),
        StepKind::Thumbnail => "thumbnail".into(),
        StepKind::Proxy => "render jpg".into(),
        StepKind::Review => "render mp4".into(),
        StepKind::Register => "sg version".into(),
        StepKind::Cleanup => "rm".into(),
    }
}

fn build_graph(
    settings: &Settings,
    p: &Planned<'_>,
    paths: Paths,
    project: &str,
    colorspace: &str,
) -> Result<Graph, PlanError> {
    let source = source_of(&p.rows);
    let info = info_of(p, project, colorspace, &source);
    let Paths {
        id,
        output,
        work_dir,
        frames,
    } = paths;
    let mut enabled: BTreeSet<StepKind> = settings.publish.steps.iter().copied().collect();
    enabled.insert(StepKind::Probe);
    enabled.insert(StepKind::Copy);
    let t = |k: StepKind| task_id(&id, k, "");
    let media = [StepKind::Thumbnail, StepKind::Proxy, StepKind::Review];

    let mut nodes: Vec<TaskNode> = Vec::new();
    let node = |nodes: &mut Vec<TaskNode>, kind: StepKind, step: Step, deps: Vec<TaskId>| {
        nodes.push(TaskNode {
            id: t(kind),
            label: step_label(kind, &info.seq_type),
            step,
            deps,
        })
    };
    node(
        &mut nodes,
        StepKind::Probe,
        Step::Probe {
            source: source.clone(),
            gap_policy: settings.publish.gap_policy,
        },
        vec![],
    );
    node(
        &mut nodes,
        StepKind::Copy,
        Step::Copy {
            source,
            output: output.clone(),
            frames,
        },
        vec![t(StepKind::Probe)],
    );
    for kind in media.into_iter().filter(|k| enabled.contains(k)) {
        let (output, colorspace) = (output.clone(), colorspace.to_string());
        let step = match kind {
            StepKind::Thumbnail => Step::Thumbnail { output, colorspace },
            StepKind::Proxy => Step::Proxy { output, colorspace },
            _ => Step::Review { output, colorspace },
        };
        node(&mut nodes, kind, step, vec![t(StepKind::Copy)]);
    }
    if enabled.contains(&StepKind::Register) {
        let mut deps = vec![t(StepKind::Copy)];
        deps.extend(media.into_iter().filter(|k| enabled.contains(k)).map(t));
        node(
            &mut nodes,
            StepKind::Register,
            Step::Register {
                output: output.clone(),
                info: info.clone(),
            },
            deps,
        );
    }
    if enabled.contains(&StepKind::Cleanup) {
        // Cleanup runs last: after register, or else after every leaf so no step
        // still needs the temporary files it removes.
        let deps: Vec<TaskId> = if enabled.contains(&StepKind::Register) {
            vec![t(StepKind::Register)]
        } else {
            let used: BTreeSet<&TaskId> = nodes.iter().flat_map(|n| n.deps.iter()).collect();
            nodes
                .iter()
                .filter(|n| !used.contains(&n.id))
                .map(|n| n.id.clone())
                .collect()
        };
        node(
            &mut nodes,
            StepKind::Cleanup,
            Step::Cleanup { output },
            deps,
        );
    }
    Ok(Graph {
        schema: SCHEMA_VERSION,
        id,
        info,
        work_dir,
        nodes,
    }
    .validated()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars {
            seq: "ABC".into(),
            shot: "ABC_0010".into(),
            seq_type: "org".into(),
            version: Some(7),
            plate: Some("ABC_0010_org_v007".into()),
            graph: Some("g".into()),
        }
    }

    #[test]
    fn templates_render_and_refuse_unknowns() {
        assert_eq!(
            render_template(
                "seq/{seq}/{shot}/plate/{type}/{version}/{plate}.{graph}",
                &vars()
            )
            .unwrap(),
            "seq/ABC/ABC_0010/plate/org/v007/ABC_0010_org_v007.g"
        );
        assert_eq!(render_template("{{x}}", &vars()).unwrap(), "{x}");
        for bad in ["{nope}", "{shot", "a}b", "{}"] {
            let e = render_template(bad, &vars()).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let partial = TemplateVars {
            version: None,
            ..vars()
        };
        let e = render_template("{version}", &partial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not known yet"), "{e}");
    }

    #[test]
    fn join_under_refuses_escapes() {
        let root = Path::new("/show/p");
        assert_eq!(
            join_under(root, "seq/./A/../B", false).unwrap(),
            PathBuf::from("/show/p/seq/B")
        );
        assert!(join_under(root, "../x", false).is_err());
        assert!(join_under(root, "a/../../x", false).is_err());
        assert!(join_under(root, "/etc", false).is_err());
        assert!(join_under(root, "a/..", false).is_err());
        assert!(join_under(root, "a/..", true).is_ok());
        assert!(join_under(root, "a\0b", false).is_err());
    }

    #[test]
    fn names_and_pads() {
        for ok in ["ABC_0010", "a-b.c_1", "X"] {
            assert_eq!(bad_component(ok), None, "{ok}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".hidden",
            "..",
            "a..b",
            "a/b",
            "a\\b",
            "a b",
            "a\0b",
            long.as_str(),
        ] {
            assert!(bad_component(bad).is_some(), "{bad:?}");
        }
        assert_eq!(parse_pad("%04d"), Some(4));
        assert_eq!(parse_pad("%08d"), Some(8));
        assert_eq!(parse_pad("%d"), Some(1));
        for bad in ["", "04", "%4d", "%0d", "%099d", "%04x", "%0-4d", "####"] {
            assert_eq!(parse_pad(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn version_series_splits_at_the_version_component() {
        let s = VersionSeries::of("seq/{seq}/{shot}/plate/{type}/{version}").unwrap();
        assert_eq!(s.parent, "seq/{seq}/{shot}/plate/{type}");
        assert_eq!(s.prefix, "");
        let s = VersionSeries::of("seq/{shot}/{type}_{version}_x").unwrap();
        assert_eq!(s.parent, "seq/{shot}");
        assert_eq!(s.prefix, "{type}_");
        assert!(VersionSeries::of("seq/{shot}").is_none());
    }
}
