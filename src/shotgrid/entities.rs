//! Registration over ShotGrid REST, free of duplicates although ShotGrid
//! enforces no uniqueness:
//!
//! - every create is preceded by a `_search` on the entity's natural key
//!   (Sequence `code`; Shot `code` + `sg_sequence`; Version `entity` + `code`;
//!   PublishedFile `entity` + `published_file_type` + `name` + `version_number`),
//!   all scoped to the Project; one match is updated, several: the lowest id is
//!   used and a warning logged, none: created, with the iom task id written into
//!   the configured field (`shotgrid.task_id_field`);
//! - a create is sent once; after an ambiguous failure (timeout, connection
//!   lost, 429/5xx) the key is searched again before another create;
//! - a create is followed by a search on the same key: when a concurrent
//!   registration created a twin, the lowest id is kept and the later twin
//!   retired (`DELETE`), so concurrent creators converge on one entity;
//! - PublishedFileTypes are looked up before anything is written, never created.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::auth::Credentials;
use super::client::Client;
use super::errors::ShotGridError;
use crate::config::ShotgridSettings;
use crate::error::Classify;
use crate::tracker::{EntityRef, Registered, Registration, Tracker, TrackerError};

/// The ShotGrid tracker.
pub struct ShotGridTracker {
    client: Client,
    rt: Option<tokio::runtime::Runtime>,
    task_id_field: String,
    max_attempts: u32,
    projects: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for ShotGridTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShotGridTracker")
            .field("client", &self.client)
            .finish()
    }
}

impl Drop for ShotGridTracker {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; this does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn link(entity_type: &str, id: i64) -> Value {
    json!({"type": entity_type, "id": id})
}

fn record_id(rec: &Value) -> Option<i64> {
    rec.get("id").and_then(Value::as_i64)
}

impl ShotGridTracker {
    /// Resolves the credentials (a clear error naming the variables to set when
    /// they are missing) and builds the client. No request is made yet.
    pub fn open(s: &ShotgridSettings) -> Result<ShotGridTracker, ShotGridError> {
        let name = s.script_name.resolve("shotgrid.script_name");
        let key = s.script_key.resolve("shotgrid.script_key");
        let (script_name, script_key) = match (name, key) {
            (Ok(n), Ok(k)) => (n, k),
            (n, k) => {
                let mut missing = Vec::new();
                for (r, setting, ok) in [
                    (&s.script_name, "shotgrid.script_name.file", n.is_ok()),
                    (&s.script_key, "shotgrid.script_key.file", k.is_ok()),
                ] {
                    if ok {
                        continue;
                    }
                    missing.push(match (&r.env, &r.file) {
                        (Some(v), Some(f)) => format!("{v} (or the file {})", f.display()),
                        (Some(v), None) => format!("{v} (or {setting})"),
                        (None, Some(f)) => format!("the file {}", f.display()),
                        (None, None) => format!("{setting} (no source is configured)"),
                    });
                }
                return Err(ShotGridError::Credentials(format!(
                    "set {} in the environment of iom and its workers",
                    missing.join(" and ")
                )));
            }
        };
        let client = Client::new(
            s,
            Credentials {
                script_name,
                script_key,
            },
        )?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iom-shotgrid")
            .enable_all()
            .build()
            .map_err(|e| ShotGridError::Config(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(ShotGridTracker {
            client,
            rt: Some(rt),
            task_id_field: s.task_id_field.trim().to_string(),
            max_attempts: s.max_attempts.max(1),
            projects: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` on the tracker's own runtime, from any thread (a step's
    /// blocking thread, a CLI, or inside another runtime).
    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    async fn project_id(&self, name: &str) -> Result<i64, ShotGridError> {
        if let Some(id) = self.projects.lock().unwrap().get(name) {
            return Ok(*id);
        }
        let found = self
            .client
            .search("projects", json!([["name", "is", name]]), &["name"])
            .await?;
        let id = found
            .iter()
            .filter_map(record_id)
            .min()
            .ok_or_else(|| ShotGridError::UnknownProject(name.into()))?;
        self.projects.lock().unwrap().insert(name.into(), id);
        Ok(id)
    }

    async fn published_file_type(&self, code: &str) -> Result<i64, ShotGridError> {
        let found = self
            .client
            .search(
                "published_file_types",
                json!([["code", "is", code]]),
                &["code"],
            )
            .await?;
        found
            .iter()
            .filter_map(record_id)
            .min()
            .ok_or_else(|| ShotGridError::UnknownPublishedFileType(code.into()))
    }

    /// The lowest id matching `filters`, if any. Later twins that this task
    /// created (`own`, or rows carrying its task id in the task id field) are
    /// retired: they come from a lost race with a concurrent registration or
    /// from an ambiguous create, and nothing links to them yet.
    async fn settle(
        &self,
        entity: &str,
        filters: &Value,
        task: &str,
        own: Option<i64>,
    ) -> Result<Option<i64>, ShotGridError> {
        let tf = self.task_id_field.as_str();
        let mut fields = vec!["id"];
        if !tf.is_empty() {
            fields.push(tf);
        }
        let found = self.client.search(entity, filters.clone(), &fields).await?;
        let mut rows: Vec<(i64, bool)> = found
            .iter()
            .filter_map(|r| {
                let id = record_id(r)?;
                let tagged = !tf.is_empty()
                    && r.get("attributes")
                        .and_then(|a| a.get(tf))
                        .and_then(Value::as_str)
                        == Some(task);
                Some((id, Some(id) == own || tagged))
            })
            .collect();
        rows.sort_unstable();
        let Some(&(lowest, _)) = rows.first() else {
            return Ok(None);
        };
        for &(id, mine) in &rows[1..] {
            if mine {
                tracing::warn!(
                    entity,
                    id,
                    kept = lowest,
                    "this task made a twin of an existing entity (a concurrent registration or an ambiguous create); retiring it"
                );
                if let Err(e) = self.client.delete(entity, id).await {
                    tracing::warn!(entity, id, error = %e, "cannot retire the twin; it stays, unused");
                }
            } else {
                tracing::warn!(
                    entity,
                    id,
                    using = lowest,
                    "ShotGrid holds duplicates of one natural key; using the lowest id"
                );
            }
        }
        Ok(Some(lowest))
    }

    /// Search-then-create; after an ambiguous create failure, search again
    /// before creating again; after a create, search again so concurrent
    /// creators converge on the lowest id. `(id, created)`.
    async fn find_or_create(
        &self,
        entity: &str,
        filters: Value,
        mut data: Map<String, Value>,
        task: &str,
    ) -> Result<(i64, bool), ShotGridError> {
        if !self.task_id_field.is_empty() {
            data.insert(self.task_id_field.clone(), Value::from(task));
        }
        let data = Value::Object(data);
        let mut ambiguous = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(id) = self.settle(entity, &filters, task, None).await? {
                if ambiguous {
                    tracing::info!(entity, id, "ambiguous create reconciled by searching");
                }
                return Ok((id, ambiguous));
            }
            match self.client.create(entity, &data).await {
                Ok(rec) => {
                    let id = record_id(&rec).ok_or_else(|| ShotGridError::Protocol {
                        what: format!("create of {entity}"),
                        detail: "no id".into(),
                    })?;
                    // Search-then-create races with a concurrent registration
                    // of the same key (another worker, another shot of the same
                    // sequence): look again; the lowest id wins.
                    let kept = self
                        .settle(entity, &filters, task, Some(id))
                        .await?
                        .unwrap_or(id);
                    return Ok((kept, kept == id));
                }
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    tracing::warn!(entity, attempt, error = %e, "ShotGrid create failed ambiguously; searching before any new create");
                    ambiguous = true;
                    tokio::time::sleep(self.client.backoff(attempt, e.retry_after())).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn register_async(&self, req: &Registration) -> Result<Registered, ShotGridError> {
        let task = req.task_id.0.as_str();
        // Looked up before anything is written: an unknown type changes nothing.
        let pft = self
            .published_file_type(&req.published_file.published_file_type)
            .await?;
        let project = link("Project", self.project_id(&req.project).await?);

        let (seq_id, seq_created) = self
            .find_or_create(
                "sequences",
                json!([["project", "is", project], ["code", "is", req.sequence]]),
                obj(json!({"project": project, "code": req.sequence})),
                task,
            )
            .await?;
        let seq = link("Sequence", seq_id);

        let (shot_id, shot_created) = self
            .find_or_create(
                "shots",
                json!([
                    ["project", "is", project],
                    ["code", "is", req.shot],
                    ["sg_sequence", "is", seq]
                ]),
                obj(json!({"project": project, "code": req.shot, "sg_sequence": seq})),
                task,
            )
            .await?;
        let shot = link("Shot", shot_id);
        if let Some(cut) = &req.cut {
            self.client
                .update(
                    "shots",
                    shot_id,
                    &serde_json::to_value(cut).unwrap_or_default(),
                )
                .await?;
        }

        let mut vfields = obj(serde_json::to_value(&req.version).unwrap_or_default());
        vfields.retain(|_, v| !v.is_null());
        // Version has no `version_number` field (it is in the code and on the
        // PublishedFile); an unknown field on a write is a 400.
        vfields.remove("version_number");
        let mut vcreate = vfields.clone();
        vcreate.insert("project".into(), project.clone());
        vcreate.insert("entity".into(), shot.clone());
        let (version_id, version_created) = self
            .find_or_create(
                "versions",
                json!([
                    ["project", "is", project],
                    ["entity", "is", shot],
                    ["code", "is", req.version.code]
                ]),
                vcreate,
                task,
            )
            .await?;
        if !version_created {
            self.client
                .update("versions", version_id, &Value::Object(vfields))
                .await?;
        }
        let version = link("Version", version_id);

        let pf = &req.published_file;
        let local_path = pf.path.replace('\\', "/");
        let code = local_path
            .rsplit('/')
            .next()
            .unwrap_or(&local_path)
            .to_string();
        let (pf_id, pf_created) = self
            .find_or_create(
                "published_files",
                json!([
                    ["project", "is", project],
                    ["entity", "is", shot],
                    ["published_file_type", "is", link("PublishedFileType", pft)],
                    ["name", "is", pf.name],
                    ["version_number", "is", pf.version_number]
                ]),
                obj(json!({
                    "project": project,
                    "entity": shot,
                    "name": pf.name,
                    "code": code,
                    "version_number": pf.version_number,
                    "published_file_type": link("PublishedFileType", pft),
                    "path": {"local_path": local_path},
                    "path_cache": local_path,
                    "version": version,
                    "sg_colorspace": pf.sg_colorspace,
                })),
                task,
            )
            .await?;
        if !pf_created {
            // `path` is not rewritten: every path write mints an Attachment.
            self.client
                .update(
                    "published_files",
                    pf_id,
                    &json!({"version": version, "sg_colorspace": pf.sg_colorspace}),
                )
                .await?;
        }

        let mut uploaded = Vec::new();
        for m in &req.media {
            if !m.path.is_file() {
                continue;
            }
            self.client
                .upload("versions", version_id, &m.field, &m.path)
                .await?;
            uploaded.push(m.field.clone());
        }

        let r = |t: &str, id: i64, created: bool| EntityRef {
            entity_type: t.into(),
            id: id.to_string(),
            created,
        };
        Ok(Registered {
            sequence: r("Sequence", seq_id, seq_created),
            shot: r("Shot", shot_id, shot_created),
            version: r("Version", version_id, version_created),
            published_file: r("PublishedFile", pf_id, pf_created),
            uploaded,
        })
    }

    /// Version numbers of a shot and seq type: the `version_number` of its
    /// PublishedFiles named `<shot>_<seq type>` (Version has no number field).
    async fn find_versions_async(
        &self,
        project: &str,
        shot: &str,
        seq_type: &str,
    ) -> Result<Vec<u32>, ShotGridError> {
        let project = link("Project", self.project_id(project).await?);
        let shots = self
            .client
            .search(
                "shots",
                json!([["project", "is", project], ["code", "is", shot]]),
                &["code"],
            )
            .await?;
        let mut out = Vec::new();
        for id in shots.iter().filter_map(record_id) {
            let files = self
                .client
                .search(
                    "published_files",
                    json!([
                        ["project", "is", project],
                        ["entity", "is", link("Shot", id)],
                        ["name", "is", format!("{shot}_{seq_type}")]
                    ]),
                    &["version_number"],
                )
                .await?;
            out.extend(
                files
                    .iter()
                    .filter_map(|v| v.pointer("/attributes/version_number"))
                    .filter_map(Value::as_u64)
                    .filter_map(|n| u32::try_from(n).ok()),
            );
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Tracker for ShotGridTracker {
    fn register(&self, req: &Registration) -> Result<Registered, TrackerError> {
        Ok(self.block_on(self.register_async(req))?)
    }

    fn find_versions(
        &self,
        project: &str,
        shot: &str,
        seq_type: &str,
    ) -> Result<Vec<u32>, TrackerError> {
        Ok(self.block_on(self.find_versions_async(project, shot, seq_type))?)
    }
}
