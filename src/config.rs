//! Layered settings: compiled defaults → a YAML file → `IOM__SECTION__KEY` env vars.
//!
//! The defaults are `config/settings.yml`, compiled in, so the file documents every
//! key and the binary never runs without one. `${VAR}` and `${VAR:-default}` in
//! string values are resolved from the environment before the layers merge. The
//! result is deserialized strictly: an unknown key or a bad value is an error that
//! names the key path (`scan.jobs`).
//!
//! Secrets never live in settings files: a [`SecretRef`] names an environment
//! variable or a file, and the resolved [`Secret`] prints as `***` in `Debug`,
//! `Display` and logs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorClass};

/// The compiled-in defaults (the documented file itself).
pub const DEFAULTS_YAML: &str = include_str!("../config/settings.yml");

/// Environment variable that names a settings file.
pub const CONFIG_ENV: &str = "IOM_CONFIG";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A settings file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A settings file is not valid YAML.
    #[error("settings file {path} is not valid YAML: {message}")]
    Yaml {
        /// The file (or `<defaults>`).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// `${VAR}` names a variable that is not set and has no `:-default`.
    #[error("setting `{key}` references ${{{var}}}, which is not set; export {var} or give a default as ${{{var}:-value}}")]
    MissingVar {
        /// Key path of the value.
        key: String,
        /// The variable.
        var: String,
    },
    /// A key is unknown or a value has the wrong type or range.
    #[error("bad setting `{key}`: {message}")]
    Invalid {
        /// Key path, e.g. `thumbnail.width`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret could not be resolved.
    #[error("secret `{name}` is not available: {why}")]
    Secret {
        /// Which secret.
        name: String,
        /// What to do.
        why: String,
    },
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// All settings. Each section is documented in `config/settings.yml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Project identity and root.
    pub project: ProjectSettings,
    /// Delivery scanning.
    pub scan: ScanSettings,
    /// Scan-time thumbnails.
    pub thumbnail: ThumbnailSettings,
    /// Colour management.
    pub colour: ColourSettings,
    /// EDL reading.
    pub edl: EdlSettings,
    /// Scanlist workbook layout.
    pub scanlist: ScanlistSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Publish layout and graph shape.
    pub publish: PublishSettings,
    /// RabbitMQ.
    pub broker: BrokerSettings,
    /// Farm workers.
    pub worker: WorkerSettings,
    /// Where registrations go.
    pub tracker: TrackerSettings,
    /// The Tractor mirror (job scripts, engine, bridge).
    pub tractor: TractorSettings,
    /// Prometheus `/metrics`.
    pub metrics: MetricsSettings,
    /// OpenTelemetry trace export.
    pub telemetry: TelemetrySettings,
    /// The ShotGrid site (used when `site` is set).
    #[serde(default)]
    pub shotgrid: ShotgridSettings,
    /// The farm media steps (proxy, review).
    #[serde(default)]
    pub media: MediaSettings,
}

/// `tractor:` section (see `config/settings.yml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TractorSettings {
    /// Engine `host:port`; `TRACTOR_ENGINE` overrides it.
    pub engine: String,
    /// User the bridge spools and logs in as.
    pub user: String,
    /// Password source (login for a `tsid` only when it resolves).
    pub password: SecretRef,
    /// Job title prefix (`[IOM]`).
    pub title_prefix: String,
    /// Job service key.
    pub service: String,
    /// Job service key for clip-library (`lib`) publishes.
    pub lib_service: String,
    /// Service key of the proxy commands (utility blades with many slots).
    pub proxy_service: String,
    /// Job priority.
    pub priority: f64,
    /// Job projects.
    pub projects: Vec<String>,
    /// Job tags.
    pub tags: Vec<String>,
    /// Job envkey.
    pub envkey: Vec<String>,
    /// The bridge binary as blades run it.
    pub bridge_binary: String,
    /// graph id -> jid record, under project.root.
    pub state_file: String,
    /// Bridge's durable event queue suffix (`<prefix>.<queue>`).
    pub queue: String,
    /// Spool retry backoff cap, in seconds.
    pub spool_backoff_cap_secs: u64,
    /// How often `await` re-reads the work folder, in milliseconds.
    pub poll_ms: u64,
}

/// `metrics:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` to serve `/metrics` on; empty = off.
    pub listen: String,
    /// Seconds between queue depth readings exported by this process; 0 = off.
    pub queue_depth_every_secs: u64,
}

/// `telemetry:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); empty = `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` when set, else off.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans; `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
}

/// `publish:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    /// Plate frames folder template.
    pub frames_dir: String,
    /// Plate folder template (movies, filmstrip).
    pub plate_dir: String,
    /// JPEG proxy folder template.
    pub jpg_dir: String,
    /// Half-size JPEG proxy folder template.
    pub jpg_2k_dir: String,
    /// Plate name template.
    pub plate_name: String,
    /// Work folder template.
    pub work_dir: String,
    /// First published frame number.
    pub first_frame: i64,
    /// Published frame padding.
    pub pad: usize,
    /// Allowed seq types.
    pub seq_types: Vec<String>,
    /// Missing-frame policy.
    pub gap_policy: crate::task::GapPolicy,
    /// Steps each graph holds.
    pub steps: Vec<crate::task::StepKind>,
    /// Movie plates published as frames ("MOV to DPX"); off keeps the movie.
    pub movie_frames: MovieFrames,
    /// Per-project [`PublishSettings::movie_frames`] (the Project's `sg_out_format`).
    pub project_movie_frames: BTreeMap<String, MovieFrames>,
}

impl PublishSettings {
    /// The frame format movie plates of `project` are published in (`None`: keep
    /// the movie).
    pub fn movie_frames_for(&self, project: &str) -> Option<crate::task::FrameFormat> {
        self.project_movie_frames
            .get(project)
            .unwrap_or(&self.movie_frames)
            .0
    }
}

/// A `movie_frames` setting: a [`crate::task::FrameFormat`] name, or `""`/`off`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MovieFrames(pub Option<crate::task::FrameFormat>);

impl TryFrom<String> for MovieFrames {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::task::FrameFormat::parse_setting(&s).map(MovieFrames)
    }
}

impl From<MovieFrames> for String {
    fn from(m: MovieFrames) -> String {
        m.0.map(|f| f.name().to_string()).unwrap_or_default()
    }
}

/// `broker:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// AMQP URL without password; empty = embedded mode.
    pub url: String,
    /// Where the password comes from.
    pub password: SecretRef,
    /// Exchange/queue name prefix.
    pub prefix: String,
    /// Publisher-confirm timeout.
    pub confirm_timeout_secs: u64,
    /// `x-delivery-limit`.
    pub delivery_limit: u32,
    /// Retry delay tiers (seconds).
    pub retry_tiers_secs: Vec<u64>,
}

/// `worker:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Concurrent tasks (= prefetch).
    pub slots: u16,
    /// Step queues consumed.
    pub queues: Vec<crate::task::StepKind>,
    /// Attempts before dead-lettering a transient failure.
    pub max_attempts: u32,
    /// Backoff base.
    pub backoff_base_secs: u64,
    /// Backoff cap.
    pub backoff_cap_secs: u64,
    /// SIGTERM grace period.
    pub shutdown_grace_secs: u64,
    /// Time limit per step kind.
    pub time_limits_secs: BTreeMap<crate::task::StepKind, u64>,
}

/// `tracker:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSettings {
    /// `local` or `shotgrid`.
    pub kind: String,
    /// Local tracker folder under the project root.
    pub local_dir: String,
}

/// `shotgrid:` section. Credentials are never values here: the script name
/// and key are [`SecretRef`]s (an environment variable or a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShotgridSettings {
    /// Site URL (`https://studio.shotgrid.autodesk.com`); empty: no ShotGrid.
    pub site: String,
    /// Where the script name comes from.
    pub script_name: SecretRef,
    /// Where the script key comes from.
    pub script_key: SecretRef,
    /// Text field recording the iom task id on entities iom creates (empty: none).
    pub task_id_field: String,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Timeout of one API request, ms.
    pub request_timeout_ms: u64,
    /// Timeout of one presigned upload PUT, ms.
    pub upload_timeout_ms: u64,
    /// Attempts for a retryable call (reads, idempotent updates, upload PUTs)
    /// and for a create reconciled after an ambiguous failure.
    pub max_attempts: u32,
    /// First back-off, ms (doubled each attempt).
    pub backoff_base_ms: u64,
    /// Longest back-off (and longest `Retry-After` honoured), ms.
    pub backoff_cap_ms: u64,
}

impl Default for ShotgridSettings {
    fn default() -> Self {
        ShotgridSettings {
            site: String::new(),
            script_name: SecretRef {
                env: Some("IOM_SHOTGRID_SCRIPT_NAME".into()),
                file: None,
            },
            script_key: SecretRef {
                env: Some("IOM_SHOTGRID_SCRIPT_KEY".into()),
                file: None,
            },
            task_id_field: "sg_iom_task_id".into(),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            upload_timeout_ms: 600_000,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_cap_ms: 30_000,
        }
    }
}

/// `project:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Project name.
    pub name: String,
    /// Project root; every published path stays under it.
    pub root: PathBuf,
}

/// `scan:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Worker threads; 0 = one per core.
    pub jobs: usize,
    /// Directory depth limit.
    pub max_depth: usize,
    /// Fewest frame-number digits.
    pub min_frame_digits: usize,
    /// Most frame-number digits.
    pub max_frame_digits: usize,
    /// Image-sequence extensions.
    pub image_extensions: Vec<String>,
    /// Movie extensions.
    pub movie_extensions: Vec<String>,
    /// Folder names never entered.
    pub skip_dirs: Vec<String>,
    /// Follow symlinks (loops detected).
    pub follow_symlinks: bool,
    /// Structural check of every frame.
    pub verify_frames: bool,
}

/// `thumbnail:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSettings {
    /// Bounding width.
    pub width: u32,
    /// Bounding height.
    pub height: u32,
    /// Frame choice.
    pub frame: FrameChoice,
    /// JPEG quality.
    pub quality: u8,
    /// Folder name beside the sequences.
    pub dir_name: String,
}

/// Which frame of a sequence becomes its thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameChoice {
    /// The first frame on disk (the original's choice).
    First,
    /// The middle frame.
    Middle,
    /// The last frame.
    Last,
    /// This many frames after the first (clamped to the last).
    Offset(u64),
}

impl FrameChoice {
    /// Picks an index into `len` frames.
    pub fn index(self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        match self {
            FrameChoice::First => 0,
            FrameChoice::Middle => len / 2,
            FrameChoice::Last => len - 1,
            FrameChoice::Offset(n) => (n as usize).min(len - 1),
        }
    }
}

impl Serialize for FrameChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FrameChoice::First => s.serialize_str("first"),
            FrameChoice::Middle => s.serialize_str("middle"),
            FrameChoice::Last => s.serialize_str("last"),
            FrameChoice::Offset(n) => s.serialize_str(&n.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for FrameChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(FrameChoice::Offset(n)),
            Raw::S(s) => match s.trim() {
                "first" => Ok(FrameChoice::First),
                "middle" => Ok(FrameChoice::Middle),
                "last" => Ok(FrameChoice::Last),
                other => other.parse::<u64>().map(FrameChoice::Offset).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected first, middle, last or a frame offset, got {other:?}"
                    ))
                }),
            },
        }
    }
}

/// `colour:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColourSettings {
    /// Display encoding: `srgb`, `rec709`, `gamma24`.
    pub display: String,
    /// Default scan colour space name.
    pub default_colorspace: String,
    /// Known colour spaces by name.
    pub spaces: BTreeMap<String, ColourSpaceSettings>,
    /// Per-project overrides.
    pub projects: BTreeMap<String, ProjectColourSettings>,
}

/// One named scan colour space.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColourSpaceSettings {
    /// Built-in input transform name.
    pub transform: String,
    /// Optional 3D LUT applied after the transform (display-referred input expected).
    #[serde(default)]
    pub lut: Option<PathBuf>,
    /// Output/view name the original wrote (kept for the tracker).
    #[serde(default)]
    pub output: Option<String>,
}

/// A project's colour override.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectColourSettings {
    /// The project's default scan colour space.
    #[serde(default)]
    pub colorspace: Option<String>,
    /// A `.cube` LUT that replaces the built-in display transform.
    #[serde(default)]
    pub lut: Option<PathBuf>,
}

/// `edl:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdlSettings {
    /// Rate used when the movie has none.
    pub fallback_fps: String,
    /// Refuse source/record duration mismatches.
    pub strict_durations: bool,
}

/// `scanlist:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanlistSettings {
    /// Sheet name.
    pub sheet_name: String,
    /// Embedded thumbnail scale.
    pub thumbnail_scale: f64,
    /// Data row height (points).
    pub row_height: f64,
}

/// `logging:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// Default level filter.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Settings {
    /// The compiled-in defaults alone (no file, no environment).
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::load_with(None, &|_| None, std::iter::empty())
    }

    /// Loads defaults → `file` (or `IOM_CONFIG`, `./config/local.yml`,
    /// `/etc/iom/settings.yml`) → `IOM__*` environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let chosen = file.map(Path::to_path_buf).or(env_file).or_else(|| {
            [
                PathBuf::from("config/local.yml"),
                PathBuf::from("/etc/iom/settings.yml"),
            ]
            .into_iter()
            .find(|p| p.is_file())
        });
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with(
            chosen.as_deref(),
            &|name| std::env::var(name).ok(),
            vars.into_iter(),
        )
    }

    /// Loads with an explicit environment: `lookup` resolves `${VAR}`, `env` supplies
    /// the `IOM__*` overrides. Tests use this to stay independent of the process env.
    pub fn load_with(
        file: Option<&Path>,
        lookup: &dyn Fn(&str) -> Option<String>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(yaml_source(DEFAULTS_YAML, "<defaults>", lookup)?);
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            builder = builder.add_source(yaml_source(&text, &path.display().to_string(), lookup)?);
        }
        let env_map: std::collections::HashMap<String, String> = env
            .filter(|(k, _)| k.starts_with("IOM__"))
            .map(|(k, v)| {
                let v = resolve_vars(&v, lookup).map_err(|var| ConfigError::MissingVar {
                    key: k.clone(),
                    var,
                })?;
                Ok((k, v))
            })
            .collect::<Result<_, ConfigError>>()?;
        builder = builder.add_source(
            config::Environment::with_prefix("IOM")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("scan.image_extensions")
                .with_list_parse_key("scan.movie_extensions")
                .with_list_parse_key("scan.skip_dirs")
                .with_list_parse_key("worker.queues")
                .with_list_parse_key("publish.steps")
                .with_list_parse_key("publish.seq_types")
                .with_list_parse_key("broker.retry_tiers_secs")
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let cfg = builder.build().map_err(|e| ConfigError::Invalid {
            key: "<merge>".into(),
            message: e.to_string(),
        })?;
        let settings: Settings = serde_path_to_error::deserialize(cfg).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range checks that types cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        let s = &self.scan;
        if !(1..=12).contains(&s.min_frame_digits) || s.min_frame_digits > s.max_frame_digits {
            return bad(
                "scan.min_frame_digits",
                format!(
                    "must be 1..=12 and not above scan.max_frame_digits ({})",
                    s.max_frame_digits
                ),
            );
        }
        if s.max_frame_digits > 12 {
            return bad("scan.max_frame_digits", "must be at most 12".into());
        }
        if s.max_depth == 0 {
            return bad("scan.max_depth", "must be at least 1".into());
        }
        let t = &self.thumbnail;
        if !(16..=8192).contains(&t.width) {
            return bad(
                "thumbnail.width",
                format!("{} is outside 16..=8192", t.width),
            );
        }
        if !(16..=8192).contains(&t.height) {
            return bad(
                "thumbnail.height",
                format!("{} is outside 16..=8192", t.height),
            );
        }
        if !(1..=100).contains(&t.quality) {
            return bad(
                "thumbnail.quality",
                format!("{} is outside 1..=100", t.quality),
            );
        }
        if !valid_component(&t.dir_name) {
            return bad(
                "thumbnail.dir_name",
                format!("{:?} must be a single folder name", t.dir_name),
            );
        }
        if !["srgb", "rec709", "gamma24"].contains(&self.colour.display.as_str()) {
            return bad(
                "colour.display",
                format!(
                    "{:?}: expected srgb, rec709 or gamma24",
                    self.colour.display
                ),
            );
        }
        if !self
            .colour
            .spaces
            .contains_key(&self.colour.default_colorspace)
        {
            return bad(
                "colour.default_colorspace",
                format!(
                    "{:?} is not one of colour.spaces ({})",
                    self.colour.default_colorspace,
                    self.colour
                        .spaces
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        for (name, p) in &self.colour.projects {
            if let Some(cs) = &p.colorspace {
                if !self.colour.spaces.contains_key(cs) {
                    return bad(
                        &format!("colour.projects.{name}.colorspace"),
                        format!("{cs:?} is not one of colour.spaces"),
                    );
                }
            }
        }
        if self
            .edl
            .fallback_fps
            .parse::<crate::timecode::FrameRate>()
            .is_err()
        {
            return bad(
                "edl.fallback_fps",
                format!("{:?} is not a frame rate", self.edl.fallback_fps),
            );
        }
        if !(self.scanlist.thumbnail_scale > 0.0 && self.scanlist.thumbnail_scale <= 4.0) {
            return bad("scanlist.thumbnail_scale", "must be in (0, 4]".into());
        }
        if !["text", "json"].contains(&self.logging.format.as_str()) {
            return bad("logging.format", "expected text or json".into());
        }
        let p = &self.publish;
        if !(1..=12).contains(&p.pad) {
            return bad("publish.pad", format!("{} is outside 1..=12", p.pad));
        }
        if p.first_frame < 0 {
            return bad("publish.first_frame", "must not be negative".into());
        }
        for t in &p.seq_types {
            if !valid_component(t) {
                return bad("publish.seq_types", format!("{t:?} is not a folder name"));
            }
        }
        let b = &self.broker;
        if b.retry_tiers_secs.is_empty() || b.retry_tiers_secs.contains(&0) {
            return bad(
                "broker.retry_tiers_secs",
                "needs at least one tier, each above 0 seconds".into(),
            );
        }
        if b.prefix.is_empty()
            || !b
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return bad(
                "broker.prefix",
                format!("{:?}: use letters, digits, . _ -", b.prefix),
            );
        }
        if b.delivery_limit == 0 {
            return bad("broker.delivery_limit", "must be at least 1".into());
        }
        if b.confirm_timeout_secs == 0 {
            return bad("broker.confirm_timeout_secs", "must be at least 1".into());
        }
        let w = &self.worker;
        if w.slots == 0 {
            return bad("worker.slots", "must be at least 1".into());
        }
        if w.max_attempts == 0 {
            return bad("worker.max_attempts", "must be at least 1".into());
        }
        if w.queues.is_empty() {
            return bad("worker.queues", "name at least one step queue".into());
        }
        if !["local", "shotgrid"].contains(&self.tracker.kind.as_str()) {
            return bad(
                "tracker.kind",
                format!("{:?}: expected local or shotgrid", self.tracker.kind),
            );
        }
        Ok(())
    }

    /// Worker threads to use for scanning (resolves `0`).
    pub fn scan_jobs(&self) -> usize {
        if self.scan.jobs == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            self.scan.jobs
        }
    }
}

/// A single path component: no separators, not `.`/`..`, not empty, no NUL.
pub fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

fn yaml_source(
    text: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, ConfigError> {
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            path: origin.into(),
            message: e.to_string(),
        })?;
    substitute(&mut value, String::new(), lookup)?;
    let resolved = serde_yaml::to_string(&value).map_err(|e| ConfigError::Yaml {
        path: origin.into(),
        message: e.to_string(),
    })?;
    Ok(config::File::from_str(&resolved, config::FileFormat::Yaml))
}

fn substitute(
    v: &mut serde_yaml::Value,
    key: String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        serde_yaml::Value::String(s) => {
            *s = resolve_vars(s, lookup).map_err(|var| ConfigError::MissingVar {
                key: key.clone(),
                var,
            })?;
        }
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let name = k.as_str().unwrap_or("?");
                let path = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
                substitute(child, path, lookup)?;
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                substitute(child, format!("{key}[{i}]"), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Returns the
/// missing variable's name on failure.
pub fn resolve_vars(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push_str(&rest[pos..]);
                return Ok(out);
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match lookup(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(name.to_string()),
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a secret comes from: an environment variable, or a file (first line).
/// Settings files name the source, never the value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (e.g. a mounted Kubernetes secret).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// Resolves the secret; `name` is used in the error, which says what to set.
    pub fn resolve(&self, name: &str) -> Result<Secret, ConfigError> {
        if let Some(var) = &self.env {
            if let Ok(v) = std::env::var(var) {
                if !v.trim().is_empty() {
                    return Ok(Secret::new(v.trim().to_string()));
                }
            }
        }
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
                name: name.into(),
                why: format!("cannot read secret file {}: {e}", path.display()),
            })?;
            let v = text.lines().next().unwrap_or("").trim().to_string();
            if !v.is_empty() {
                return Ok(Secret::new(v));
            }
        }
        let mut how = Vec::new();
        if let Some(var) = &self.env {
            how.push(format!("export {var}"));
        }
        if let Some(path) = &self.file {
            how.push(format!("write it to {}", path.display()));
        }
        if how.is_empty() {
            how.push("configure an env variable or a file for it".into());
        }
        Err(ConfigError::Secret {
            name: name.into(),
            why: how.join(" or "),
        })
    }
}

/// A secret value. It never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(v: String) -> Self {
        Secret(v)
    }

    /// The value, for the one place that sends it (an auth request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `media:` section: the farm media steps, `proxy` and `review` (see
/// `config/settings.yml`). Checked when a step runs, so a bad value fails that
/// task with a message naming the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// Missing published frames: `graph` (the graph's probe policy), `fail`,
    /// `black` or `previous`.
    pub gap_policy: String,
    /// Frames decoded and rendered at once (0 = one per CPU core).
    pub jobs: usize,
    /// JPEG proxies.
    pub proxy: ProxySettings,
    /// Review movies and filmstrip.
    pub review: ReviewSettings,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            gap_policy: "graph".into(),
            jobs: 0,
            proxy: ProxySettings::default(),
            review: ReviewSettings::default(),
        }
    }
}

/// `media.proxy:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// JPEG quality 1-100.
    pub quality: u8,
    /// Chroma subsampling: `4:4:4`, `4:2:2` or `4:2:0`.
    pub subsampling: String,
    /// Display encoding of the proxies (`srgb`, `rec709`, `gamma24`; empty = colour.display).
    pub display: String,
    /// A second set fitted to this width goes to `jpg_2k_dir` when the plate is wider (0 = never).
    pub small_width: u32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            quality: 95,
            subsampling: "4:2:0".into(),
            display: String::new(),
            small_width: 2048,
        }
    }
}

/// `media.review:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewSettings {
    /// Write `<plate>.mp4` (H.264).
    pub mp4: bool,
    /// x264 constant rate factor (0-51).
    pub crf: u8,
    /// x264 preset.
    pub preset: String,
    /// Delivery codec of `<plate>.mov`, by its name in the original's table; empty = no MOV.
    pub codec: String,
    /// Per-project delivery codec (the Project's `sg_mov_codec`), overriding `codec`.
    pub project_codecs: BTreeMap<String, String>,
    /// Display encoding of the movies (`rec709` = BT.1886; empty = colour.display).
    pub display: String,
    /// Frame rate when neither the frames nor the publish carry one.
    pub default_fps: String,
    /// Burn shot, version, frame number and timecode into every frame.
    pub burn_in: bool,
    /// Put a slate frame before the first frame (the timecode starts one frame earlier).
    pub slate: bool,
    /// Write `<plate>stream.jpeg`.
    pub filmstrip: bool,
    /// Frames in the filmstrip (evenly spaced).
    pub filmstrip_frames: u32,
    /// Width of each filmstrip frame in pixels.
    pub filmstrip_width: u32,
    /// Write the montage frames (the filmstrip's frames, each on its own) to
    /// `<plate_dir>/montage/<type>_v###_jpg/<plate>.####.jpg`.
    pub montage: bool,
    /// Width of each montage frame in pixels.
    pub montage_width: u32,
    /// Burn the publish date (`YYYY-MM-DD`, the day the publish was submitted)
    /// into the montage frames and the filmstrip, as the original did.
    pub date_burn_in: bool,
    /// Threads per movie encoder; 0 = the encoder's own choice.
    pub encoder_threads: u32,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        ReviewSettings {
            mp4: true,
            crf: 18,
            preset: "veryfast".into(),
            codec: "Apple ProRes 422 HQ".into(),
            project_codecs: BTreeMap::new(),
            display: "rec709".into(),
            default_fps: "24".into(),
            burn_in: false,
            slate: false,
            filmstrip: true,
            filmstrip_frames: 24,
            filmstrip_width: 240,
            montage: true,
            montage_width: 960,
            date_burn_in: true,
            encoder_threads: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.thumbnail.width, 960);
        assert_eq!(s.thumbnail.height, 540);
        assert_eq!(s.thumbnail.frame, FrameChoice::First);
        assert_eq!(s.project.root, PathBuf::from("/show/demo"));
        assert!(s.colour.spaces.contains_key("AlexaV3LogC"));
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yml");
        std::fs::write(
            &f,
            "thumbnail:\n  width: 1280\n  height: 720\nscan:\n  jobs: 3\n",
        )
        .unwrap();
        let s = Settings::load_with(
            Some(&f),
            &|_| None,
            env(&[
                ("IOM__SCAN__JOBS", "7"),
                ("IOM__THUMBNAIL__FRAME", "middle"),
            ])
            .into_iter(),
        )
        .unwrap();
        assert_eq!(s.thumbnail.width, 1280);
        assert_eq!(s.scan.jobs, 7);
        assert_eq!(s.thumbnail.frame, FrameChoice::Middle);
    }

    #[test]
    fn env_lists_parse() {
        let s = Settings::load_with(
            None,
            &|_| None,
            env(&[("IOM__SCAN__IMAGE_EXTENSIONS", "exr,dpx")]).into_iter(),
        )
        .unwrap();
        assert_eq!(s.scan.image_extensions, vec!["exr", "dpx"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yml");
        std::fs::write(&f, "thumbnail:\n  widht: 12\n").unwrap();
        let e = Settings::load_with(Some(&f), &|_| None, std::iter::empty()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("thumbnail") && msg.contains("widht"), "{msg}");
        let e = Settings::load_with(
            None,
            &|_| None,
            env(&[("IOM__SCAN__BOGUS", "1")]).into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Settings::load_with(
            None,
            &|_| None,
            env(&[("IOM__SCAN__JOBS", "many")]).into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("scan.jobs"), "{e}");
        let e = Settings::load_with(
            None,
            &|_| None,
            env(&[("IOM__THUMBNAIL__QUALITY", "0")]).into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("thumbnail.quality"), "{e}");
    }

    #[test]
    fn vars_resolve_with_defaults() {
        let s = Settings::load_with(
            None,
            &|n| (n == "IOM_PROJECT_ROOT").then(|| "/show/xyz".to_string()),
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(s.project.root, PathBuf::from("/show/xyz"));
        assert_eq!(
            resolve_vars("a${X}b$$c${Y:-d}", &|n| (n == "X").then(|| "1".into())).unwrap(),
            "a1b$cd"
        );
        assert_eq!(resolve_vars("${NOPE}", &|_| None).unwrap_err(), "NOPE");
    }

    #[test]
    fn missing_var_names_key_and_var() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yml");
        std::fs::write(&f, "project:\n  root: ${STUDIO_ROOT}/show\n").unwrap();
        let e = Settings::load_with(Some(&f), &|_| None, std::iter::empty()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("project.root") && msg.contains("STUDIO_ROOT"),
            "{msg}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "abc123\n").unwrap();
        let r = SecretRef {
            env: Some("IOM_TEST_SURELY_UNSET_VAR".into()),
            file: Some(f),
        };
        assert_eq!(r.resolve("key").unwrap().expose(), "abc123");
        let r = SecretRef {
            env: Some("IOM_TEST_SURELY_UNSET_VAR".into()),
            file: None,
        };
        let e = r.resolve("shotgrid script key").unwrap_err().to_string();
        assert!(e.contains("IOM_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
