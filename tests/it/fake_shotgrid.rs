//! A strict fake ShotGrid REST v1 site (shotgrid.md §9), on 127.0.0.1:0.
//!
//! It rejects what the real API rejects: auth only form-encoded
//! `client_credentials` (JSON → 400, anything else → 415); every other call needs a
//! live bearer token (an expired one → 401 code 102 "Token Expired"); `_search`
//! only with the vendor array/hash content types (`application/json` → 415); link
//! values as hashes; unknown fields on writes → 400; missing `project` → 400;
//! `code: ""` → 400/104; `PATCH` → 404; PublishedFile paths with forward slashes
//! under a LocalStorage root; the presigned PUT without `Authorization` and with a
//! `Content-Length` (chunked → 501); completion at the exact path, answered 201
//! with a one-space body (and, as the real one, even when no PUT happened).
//! There is **no uniqueness**: the same create twice makes two rows.
//!
//! Faults are injected per request label (`auth`, `search:Shot`, `create:Version`,
//! `update:Shot`, `read:Version`, `upload_init:image`, `upload_put`,
//! `upload_complete:sg_uploaded_movie`, …): a status without processing, a
//! status after committing, a stall after committing (the client times out on a
//! write that happened), a stall before answering, tokens expiring. Every request
//! is recorded (method, path, label, headers, body, status, time).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

/// Field kinds of the fake schema.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    Float,
    /// An entity link to one of these types.
    Link(&'static [&'static str]),
    MultiLink(&'static [&'static str]),
    /// PublishedFile `path`.
    Url,
    /// Filled by uploads only.
    Media,
}

const SHOT_LINKABLE: &[&str] = &["Asset", "Episode", "Level", "Sequence", "Shot"];

fn schema(entity: &str) -> Option<Vec<(&'static str, Kind)>> {
    use Kind::*;
    let common = [
        ("id", Int),
        ("description", Text),
        ("sg_status_list", Text),
        ("tags", MultiLink(&["Tag"])),
    ];
    let own: Vec<(&'static str, Kind)> = match entity {
        "Project" => vec![
            ("name", Text),
            ("code", Text),
            ("sg_colorspace", Text),
            ("sg_fps", Float),
        ],
        "PublishedFileType" => vec![("code", Text), ("short_name", Text), ("image", Media)],
        "LocalStorage" => vec![
            ("code", Text),
            ("linux_path", Text),
            ("mac_path", Text),
            ("windows_path", Text),
        ],
        "Sequence" => vec![
            ("code", Text),
            ("project", Link(&["Project"])),
            ("shots", MultiLink(&["Shot"])),
            ("image", Media),
            ("sg_iom_task_id", Text),
        ],
        "Shot" => vec![
            ("code", Text),
            ("project", Link(&["Project"])),
            ("sg_sequence", Link(&["Sequence"])),
            ("sg_cut_in", Int),
            ("sg_cut_out", Int),
            ("sg_cut_duration", Int),
            ("sg_head_in", Int),
            ("sg_tail_out", Int),
            ("sg_working_duration", Int),
            ("image", Media),
            ("sg_versions", MultiLink(&["Version"])),
            ("sg_published_files", MultiLink(&["PublishedFile"])),
            // The original app's custom fields (original-app.md §11).
            ("sg_timecode_in", Text),
            ("sg_timecode_out", Text),
            ("sg_resolution", Text),
            ("sg_clib_name", Text),
            ("sg_retime_duration", Text),
            ("sg_retime_percent", Text),
            ("sg_iom_task_id", Text),
        ],
        "Version" => vec![
            ("code", Text),
            ("project", Link(&["Project"])),
            ("entity", Link(SHOT_LINKABLE)),
            ("sg_task", Link(&["Task"])),
            ("user", Link(&["HumanUser", "ApiUser"])),
            ("published_files", MultiLink(&["PublishedFile"])),
            ("sg_path_to_frames", Text),
            ("sg_path_to_movie", Text),
            ("sg_first_frame", Int),
            ("sg_last_frame", Int),
            ("frame_count", Int),
            ("frame_range", Text),
            ("sg_uploaded_movie", Media),
            ("sg_uploaded_movie_mp4", Media),
            ("sg_uploaded_movie_webm", Media),
            ("sg_uploaded_movie_image", Media),
            ("sg_uploaded_movie_frame_rate", Float),
            ("sg_uploaded_movie_transcoding_status", Int),
            ("image", Media),
            ("filmstrip_image", Media),
            ("sg_version_type", Text),
            ("sg_movie_has_slate", Int),
            ("sg_frames_have_slate", Int),
            // Custom fields of the original app.
            ("sg_just_in", Int),
            ("sg_just_out", Int),
            ("sg_scan_name", Text),
            ("sg_clip_name", Text),
            ("sg_timecode_in", Text),
            ("sg_timecode_out", Text),
            ("sg_scan_colorspace", Text),
            ("sg_cut_duration", Int),
            ("sg_retime_duration", Text),
            ("sg_retime_percent", Text),
            ("sg_retime_start_frame", Text),
            ("sg_iom_task_id", Text),
        ],
        "PublishedFile" => vec![
            ("code", Text),
            ("name", Text),
            ("path", Url),
            ("path_cache", Text),
            ("path_cache_storage", Link(&["LocalStorage"])),
            ("version_number", Int),
            ("published_file_type", Link(&["PublishedFileType"])),
            ("entity", Link(&["Asset", "Episode", "Level", "Shot"])),
            ("task", Link(&["Task"])),
            ("project", Link(&["Project"])),
            ("version", Link(&["Version"])),
            ("created_by", Link(&["HumanUser", "ApiUser"])),
            ("image", Media),
            ("upstream_published_files", MultiLink(&["PublishedFile"])),
            ("downstream_published_files", MultiLink(&["PublishedFile"])),
            ("sg_colorspace", Text),
            ("sg_iom_task_id", Text),
        ],
        _ => return None,
    };
    Some(common.into_iter().chain(own).collect())
}

/// The schema type of a URL segment: the REST snake-case plural or the schema name.
fn entity_of(segment: &str) -> Option<&'static str> {
    Some(match segment {
        "projects" | "Project" => "Project",
        "published_file_types" | "PublishedFileType" => "PublishedFileType",
        "local_storages" | "LocalStorage" => "LocalStorage",
        "sequences" | "Sequence" => "Sequence",
        "shots" | "Shot" => "Shot",
        "versions" | "Version" => "Version",
        "published_files" | "PublishedFile" => "PublishedFile",
        _ => return None,
    })
}

fn has_project(entity: &str) -> bool {
    !matches!(entity, "Project" | "PublishedFileType" | "LocalStorage")
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub label: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the fake answered (or would have: a stalled reply may never
    /// reach the client); 0 while in flight.
    pub status: u16,
    /// The injected fault, if any.
    pub fault: Option<String>,
    pub at: Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A fault to inject.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (with the error envelope) without doing anything.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Do the request (a create commits), then answer this status instead.
    CommitThenStatus(u16),
    /// Do the request, then stall this long before answering.
    CommitThenStall(Duration),
    /// Stall this long, then do the request.
    StallBefore(Duration),
    /// Expire every token before handling the request (it gets a 401).
    ExpireTokens,
}

struct Rule {
    label: String,
    skip: u32,
    times: u32,
    fault: Fault,
}

/// A completed upload.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub entity: String,
    pub id: i64,
    pub field: String,
    pub filename: String,
    /// The bytes PUT to the presigned URL; `None` when completion came without a PUT.
    pub bytes: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

struct Pending {
    key: String,
    entity: String,
    id: i64,
    field: String,
    data: Value,
    bytes: Option<Vec<u8>>,
    content_type: Option<String>,
}

/// The site's state.
pub struct Site {
    pub script_name: String,
    pub script_key: String,
    /// How long a token lives.
    pub token_life: Duration,
    /// `expires_in` reported to the client (default: the real life).
    pub reported_life: Option<u64>,
    tokens: HashMap<String, Instant>,
    records: Vec<(String, i64, Map<String, Value>)>,
    /// Retired (deleted) records.
    pub retired: Vec<(String, i64, Map<String, Value>)>,
    next_id: i64,
    /// Attachment rows minted by path writes (each accepted `path` write mints one).
    pub path_attachments: u32,
    pending: Vec<Pending>,
    pub attachments: Vec<Attachment>,
    pub requests: Vec<Req>,
    rules: Vec<Rule>,
    removed_fields: Vec<(String, String)>,
    url: String,
}

fn envelope(status: u16, code: i64, title: &str, detail: Option<&str>) -> Value {
    json!({"errors": [{
        "id": format!("{:032x}", fastrand::u128(..)),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": {},
        "meta": null,
    }]})
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);

fn json_reply(status: u16, v: Value) -> Reply {
    (
        status,
        vec![(
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        )],
        v.to_string().into_bytes(),
    )
}

fn err(status: u16, code: i64, title: &str, detail: Option<&str>) -> Reply {
    json_reply(status, envelope(status, code, title, detail))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

impl Site {
    fn new(storage_root: &Path) -> Site {
        let mut s = Site {
            script_name: "iom-test-script".into(),
            script_key: format!("sgkey{:032x}", fastrand::u128(..)),
            token_life: Duration::from_secs(600),
            reported_life: None,
            tokens: HashMap::new(),
            records: Vec::new(),
            retired: Vec::new(),
            next_id: 100,
            path_attachments: 0,
            pending: Vec::new(),
            attachments: Vec::new(),
            requests: Vec::new(),
            rules: Vec::new(),
            removed_fields: Vec::new(),
            url: String::new(),
        };
        s.insert("Project", json!({"name": "demo", "code": "demo"}));
        s.insert("Project", json!({"name": "other", "code": "other"}));
        for (code, short) in [
            ("Plate", "plate"),
            ("Reference", "ref"),
            ("Source", "src"),
            ("Rendered Image", "render"),
        ] {
            s.insert(
                "PublishedFileType",
                json!({"code": code, "short_name": short}),
            );
        }
        let root = storage_root.display().to_string();
        s.insert(
            "LocalStorage",
            json!({"code": "primary", "linux_path": root.trim_end_matches('/'), "mac_path": null, "windows_path": null}),
        );
        s
    }

    fn insert(&mut self, entity: &str, fields: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        let Value::Object(m) = fields else {
            panic!("fields")
        };
        self.records.push((entity.to_string(), id, m));
        id
    }

    fn record(&self, entity: &str, id: i64) -> Option<&Map<String, Value>> {
        self.records
            .iter()
            .find(|(e, i, _)| e == entity && *i == id)
            .map(|(_, _, m)| m)
    }

    fn field_kind(&self, entity: &str, field: &str) -> Option<Kind> {
        if self
            .removed_fields
            .iter()
            .any(|(e, f)| e == entity && f == field)
        {
            return None;
        }
        schema(entity)?
            .into_iter()
            .find(|(n, _)| *n == field)
            .map(|(_, k)| k)
    }

    fn name_of(&self, entity: &str, id: i64) -> Value {
        self.record(entity, id)
            .and_then(|m| m.get("code").or_else(|| m.get("name")).cloned())
            .unwrap_or(Value::Null)
    }

    /// A record as the REST API shows it: entity fields under `relationships`.
    fn render(&self, entity: &str, id: i64, fields: Option<&[String]>) -> Value {
        let m = self.record(entity, id).cloned().unwrap_or_default();
        let wanted = |k: &str| fields.is_none_or(|f| f.iter().any(|x| x == k || x == "*"));
        let mut attributes = Map::new();
        let mut relationships = Map::new();
        for (k, v) in &m {
            if !wanted(k) {
                continue;
            }
            match self.field_kind(entity, k) {
                Some(Kind::Link(_)) => {
                    let data = match v {
                        Value::Object(l) => {
                            let t = l["type"].as_str().unwrap_or_default();
                            let i = l["id"].as_i64().unwrap_or_default();
                            json!({"type": t, "id": i, "name": self.name_of(t, i)})
                        }
                        _ => Value::Null,
                    };
                    relationships.insert(k.clone(), json!({"data": data}));
                }
                Some(Kind::MultiLink(_)) => {
                    relationships.insert(k.clone(), json!({"data": v}));
                }
                _ => {
                    attributes.insert(k.clone(), v.clone());
                }
            }
        }
        json!({
            "id": id,
            "type": entity,
            "attributes": attributes,
            "relationships": relationships,
            "links": {"self": format!("/api/v1/entity/{entity}/{id}")},
        })
    }

    fn take_fault(&mut self, label: &str) -> Option<Fault> {
        for r in &mut self.rules {
            if r.times == 0 || !(label == r.label || label.starts_with(&format!("{}:", r.label))) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            r.times -= 1;
            return Some(r.fault.clone());
        }
        None
    }

    /// The bearer check: `None` when the token is live.
    fn check_token(&self, headers: &HeaderMap) -> Option<Reply> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(token) = auth.strip_prefix("Bearer ") else {
            return Some(err(401, 102, "Unauthorized", Some("Token invalid")));
        };
        match self.tokens.get(token) {
            None => Some(err(401, 102, "Unauthorized", Some("Token invalid"))),
            Some(exp) if Instant::now() >= *exp => {
                Some(err(401, 102, "Unauthorized", Some("Token Expired")))
            }
            Some(_) => None,
        }
    }

    fn auth(&mut self, headers: &HeaderMap, body: &[u8]) -> Reply {
        match content_type(headers).as_str() {
            "application/x-www-form-urlencoded" => {}
            "application/json" => return err(400, 103, "Invalid JSON body", None),
            _ => {
                return err(
                    415,
                    103,
                    "Content-Type must be one of: 'application/x-www-form-urlencoded'",
                    None,
                )
            }
        }
        let form = parse_form(&String::from_utf8_lossy(body));
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            _ => return err(400, 103, "Unsupported grant type", None),
        }
        if form.get("client_id") != Some(&self.script_name)
            || form.get("client_secret") != Some(&self.script_key)
        {
            return err(
                400,
                102,
                "Authentication failed",
                Some("Can't authenticate script"),
            );
        }
        let token = format!("tok{:024x}", fastrand::u128(..));
        self.tokens
            .insert(token.clone(), Instant::now() + self.token_life);
        json_reply(
            200,
            json!({
                "token_type": "Bearer",
                "access_token": token,
                "expires_in": self.reported_life.unwrap_or(self.token_life.as_secs()),
                "refresh_token": format!("ref{:016x}", fastrand::u64(..)),
            }),
        )
    }

    /// Validates `data` for a write; the normalised fields.
    fn validate(
        &mut self,
        entity: &str,
        data: &Value,
        create: bool,
    ) -> Result<Map<String, Value>, Reply> {
        let Value::Object(m) = data else {
            return Err(err(400, 103, "Request body must be a JSON object", None));
        };
        let mut out = Map::new();
        for (k, v) in m {
            let Some(kind) = self.field_kind(entity, k) else {
                return Err(err(
                    400,
                    103,
                    "Invalid field",
                    Some(&format!("{entity}.{k} doesn't exist")),
                ));
            };
            let bad = |what: &str| {
                err(
                    400,
                    103,
                    "Invalid value",
                    Some(&format!("{entity}.{k}: {what}")),
                )
            };
            match kind {
                _ if k == "id" => return Err(bad("id is not editable")),
                Kind::Text => {
                    if !(v.is_string() || v.is_null()) {
                        return Err(bad("expected a string"));
                    }
                    if k == "code" && v.as_str() == Some("") {
                        return Err(err(400, 104, "Cannot set identifier field to empty", None));
                    }
                }
                Kind::Int => {
                    if !(v.is_i64() || v.is_u64() || v.is_null()) {
                        return Err(bad("expected an integer"));
                    }
                }
                Kind::Float => {
                    if !(v.is_number() || v.is_null()) {
                        return Err(bad("expected a number"));
                    }
                }
                Kind::Link(types) => {
                    if !v.is_null() {
                        self.check_link(v, types).map_err(|e| bad(&e))?;
                    }
                }
                Kind::MultiLink(types) => {
                    let Some(list) = v.as_array() else {
                        return Err(bad("expected an array of entity hashes"));
                    };
                    for l in list {
                        self.check_link(l, types).map_err(|e| bad(&e))?;
                    }
                }
                Kind::Media => return Err(bad("media fields are written by uploads only")),
                Kind::Url => {
                    out.insert(k.clone(), self.resolve_path(v)?);
                    continue;
                }
            }
            out.insert(k.clone(), v.clone());
        }
        if create && has_project(entity) && out.get("project").is_none_or(|p| p.is_null()) {
            return Err(err(
                400,
                103,
                "API create() missing 'project' attribute",
                None,
            ));
        }
        Ok(out)
    }

    fn check_link(&self, v: &Value, types: &[&str]) -> Result<(), String> {
        let (Some(t), Some(id)) = (
            v.get("type").and_then(Value::as_str),
            v.get("id").and_then(Value::as_i64),
        ) else {
            return Err(format!("links must be hashes with type and id, got {v}"));
        };
        if !types.contains(&t) {
            return Err(format!("a link to {t} is not allowed here"));
        }
        if schema(t).is_some() && self.record(t, id).is_none() {
            return Err(format!("{t} {id} does not exist"));
        }
        Ok(())
    }

    fn resolve_path(&mut self, v: &Value) -> Result<Value, Reply> {
        let Some(local) = v.get("local_path").and_then(Value::as_str) else {
            return Err(err(
                400,
                103,
                "Invalid value",
                Some("path: this fake supports local_path only"),
            ));
        };
        if local.contains('\\') {
            return Err(err(400, 104, "Invalid path", Some("backslashes")));
        }
        let storages: Vec<(i64, String, String)> = self
            .records
            .iter()
            .filter(|(e, _, _)| e == "LocalStorage")
            .map(|(_, id, m)| {
                (
                    *id,
                    m["code"].as_str().unwrap_or_default().to_string(),
                    m["linux_path"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let best = storages
            .iter()
            .filter(|(_, _, root)| local.starts_with(&format!("{root}/")))
            .max_by_key(|(_, _, root)| root.len());
        let Some((sid, code, root)) = best else {
            return Err(err(
                400,
                104,
                "Invalid path",
                Some(&format!(
                    "Path {local} doesn't match any defined Local Storage"
                )),
            ));
        };
        self.path_attachments += 1;
        let name = local.rsplit('/').next().unwrap_or(local);
        Ok(json!({
            "local_path": local,
            "local_path_linux": local,
            "local_path_mac": null,
            "local_path_windows": null,
            "relative_path": &local[root.len() + 1..],
            "local_storage": {"type": "LocalStorage", "id": sid, "name": code},
            "link_type": "local",
            "type": "Attachment",
            "id": 9000 + self.path_attachments,
            "name": name,
            "content_type": null,
        }))
    }

    fn matches(
        &self,
        entity: &str,
        id: i64,
        m: &Map<String, Value>,
        f: &Value,
    ) -> Result<bool, String> {
        if let Some(arr) = f.as_array() {
            let field = arr.first().and_then(Value::as_str).ok_or("bad filter")?;
            let op = arr.get(1).and_then(Value::as_str).ok_or("bad filter")?;
            let value = arr.get(2).cloned().unwrap_or(Value::Null);
            let kind = if field == "id" {
                Kind::Int
            } else {
                self.field_kind(entity, field)
                    .ok_or_else(|| format!("{entity}.{field} doesn't exist"))?
            };
            let have = if field == "id" {
                json!(id)
            } else {
                m.get(field).cloned().unwrap_or(Value::Null)
            };
            let is_link = matches!(kind, Kind::Link(_));
            let eq = |a: &Value, b: &Value| -> Result<bool, String> {
                if is_link {
                    if !(b.is_object() || b.is_null()) {
                        return Err(format!(
                            "{entity}.{field}: link values must be hashes, got {b}"
                        ));
                    }
                    return Ok(a.get("type") == b.get("type") && a.get("id") == b.get("id")
                        || (a.is_null() && b.is_null()));
                }
                Ok(match (a, b) {
                    (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
                    (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
                    _ => a == b,
                })
            };
            let num = |v: &Value| v.as_f64();
            return Ok(match op {
                "is" => eq(&have, &value)?,
                "is_not" => !eq(&have, &value)?,
                "in" | "not_in" => {
                    let list: Vec<Value> = match &value {
                        Value::Array(a) => a.clone(),
                        _ => arr[2..].to_vec(),
                    };
                    let mut any = false;
                    for v in &list {
                        any |= eq(&have, v)?;
                    }
                    if op == "in" {
                        any
                    } else {
                        !any
                    }
                }
                "greater_than" => num(&have).zip(num(&value)).is_some_and(|(a, b)| a > b),
                "less_than" => num(&have).zip(num(&value)).is_some_and(|(a, b)| a < b),
                "contains" => have
                    .as_str()
                    .zip(value.as_str())
                    .is_some_and(|(a, b)| a.to_lowercase().contains(&b.to_lowercase())),
                "starts_with" => have
                    .as_str()
                    .zip(value.as_str())
                    .is_some_and(|(a, b)| a.to_lowercase().starts_with(&b.to_lowercase())),
                other => return Err(format!("unknown operator {other}")),
            });
        }
        if let Some(group) = f.as_object() {
            let or = group.get("logical_operator").and_then(Value::as_str) == Some("or");
            let conds = group
                .get("conditions")
                .and_then(Value::as_array)
                .ok_or("a filter group needs conditions")?;
            let mut results = Vec::new();
            for c in conds {
                results.push(self.matches(entity, id, m, c)?);
            }
            return Ok(if or {
                results.iter().any(|x| *x)
            } else {
                results.iter().all(|x| *x)
            });
        }
        Err(format!("bad filter {f}"))
    }

    fn search(&self, entity: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
        let ct = content_type(headers);
        let hash = match ct.as_str() {
            "application/vnd+shotgun.api3_array+json" => false,
            "application/vnd+shotgun.api3_hash+json" => true,
            _ => {
                return err(
                    415,
                    103,
                    "Unsupported Media Type",
                    Some("Content-Type must be application/vnd+shotgun.api3_array+json or application/vnd+shotgun.api3_hash+json"),
                )
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return err(400, 103, "Invalid JSON body", None);
        };
        let filters = v.get("filters").cloned().unwrap_or(json!([]));
        let top = if hash {
            if !filters.is_object() {
                return err(400, 103, "Hash filters must be an object", None);
            }
            filters
        } else {
            let Some(list) = filters.as_array() else {
                return err(400, 103, "Array filters must be an array", None);
            };
            if list.iter().any(|f| !f.is_array()) {
                return err(
                    400,
                    103,
                    "Array filters must be arrays of [field, op, value]",
                    None,
                );
            }
            json!({"logical_operator": "and", "conditions": list})
        };
        let fields: Option<Vec<String>> = v.get("fields").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
        let size = v
            .pointer("/page/size")
            .and_then(Value::as_u64)
            .unwrap_or(500) as usize;
        let number = v
            .pointer("/page/number")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;
        // Filters are checked even when no record is there to match.
        if let Err(d) = self.matches(entity, 0, &Map::new(), &top) {
            return err(400, 103, "Invalid filter", Some(&d));
        }
        let mut hits = Vec::new();
        for (e, id, m) in &self.records {
            if e != entity {
                continue;
            }
            match self.matches(entity, *id, m, &top) {
                Ok(true) => hits.push(*id),
                Ok(false) => {}
                Err(d) => return err(400, 103, "Invalid filter", Some(&d)),
            }
        }
        hits.sort_unstable();
        let page: Vec<Value> = hits
            .iter()
            .skip((number - 1) * size)
            .take(size)
            .map(|id| self.render(entity, *id, fields.as_deref()))
            .collect();
        json_reply(
            200,
            json!({"data": page, "links": {
                "self": format!("/api/v1/entity/{entity}/_search?page[number]={number}"),
                "next": format!("/api/v1/entity/{entity}/_search?page[number]={}", number + 1),
            }}),
        )
    }

    fn write_content_type(headers: &HeaderMap) -> Option<Reply> {
        (content_type(headers) != "application/json").then(|| {
            err(
                415,
                103,
                "Unsupported Media Type",
                Some("Content-Type must be application/json"),
            )
        })
    }

    fn create(&mut self, entity: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
        if let Some(r) = Self::write_content_type(headers) {
            return r;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return err(400, 103, "Invalid JSON body", None);
        };
        let fields = match self.validate(entity, &v, true) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let id = self.insert(entity, Value::Object(fields));
        let data = self.render(entity, id, None);
        json_reply(
            201,
            json!({"data": data, "links": {"self": data["links"]["self"]}}),
        )
    }

    fn update(&mut self, entity: &str, id: i64, headers: &HeaderMap, body: &[u8]) -> Reply {
        if let Some(r) = Self::write_content_type(headers) {
            return r;
        }
        if self.record(entity, id).is_none() {
            return err(404, 104, "Record not found", None);
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return err(400, 103, "Invalid JSON body", None);
        };
        let fields = match self.validate(entity, &v, false) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let rec = self
            .records
            .iter_mut()
            .find(|(e, i, _)| e == entity && *i == id)
            .unwrap();
        rec.2.extend(fields);
        json_reply(200, json!({"data": self.render(entity, id, None)}))
    }

    fn upload_init(
        &mut self,
        entity: &str,
        id: i64,
        field: &str,
        segment: &str,
        query: &str,
    ) -> Reply {
        if self.record(entity, id).is_none() {
            return err(404, 104, "Record not found", None);
        }
        if self.field_kind(entity, field) != Some(Kind::Media) {
            return err(
                400,
                103,
                "Invalid field",
                Some(&format!("{entity}.{field} does not take uploads")),
            );
        }
        let q = parse_form(query);
        let Some(filename) = q.get("filename").filter(|f| !f.is_empty()) else {
            return err(400, 103, "filename is missing", None);
        };
        let key = format!("{:032x}", fastrand::u128(..));
        let data = json!({
            "timestamp": format!("2026-11-27T03:00:00.{:06}Z", fastrand::u32(..1_000_000)),
            "upload_type": if field == "image" { "Thumbnail" } else { "Attachment" },
            "upload_id": null,
            "storage_service": "s3",
            "original_filename": filename,
            "multipart_upload": false,
        });
        self.pending.push(Pending {
            key: key.clone(),
            entity: entity.into(),
            id,
            field: field.into(),
            data: data.clone(),
            bytes: None,
            content_type: None,
        });
        json_reply(
            200,
            json!({"data": data, "links": {
                "upload": format!("{}/s3/bucket/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={:016x}", self.url, fastrand::u64(..)),
                "complete_upload": format!("/api/v1/entity/{segment}/{id}/{field}/_upload"),
            }}),
        )
    }

    fn upload_put(&mut self, key: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
        let xml = |status: u16, code: &str, msg: &str| -> Reply {
            (
                status,
                vec![("content-type".into(), "application/xml".into())],
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>").into_bytes(),
            )
        };
        if headers.contains_key("authorization") {
            return xml(400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified");
        }
        if headers.contains_key("transfer-encoding") || !headers.contains_key("content-length") {
            return xml(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            );
        }
        let Some(p) = self.pending.iter_mut().find(|p| p.key == key) else {
            return xml(403, "AccessDenied", "Request has expired");
        };
        p.bytes = Some(body.to_vec());
        p.content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (
            200,
            vec![("etag".into(), format!("\"{:032x}\"", fastrand::u128(..)))],
            Vec::new(),
        )
    }

    fn upload_complete(
        &mut self,
        entity: &str,
        id: i64,
        field: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Reply {
        if let Some(r) = Self::write_content_type(headers) {
            return r;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return err(400, 103, "Invalid JSON body", None);
        };
        if !v.get("upload_data").is_some_and(Value::is_object) {
            return err(400, 103, "upload_data is missing", None);
        }
        let info = v.get("upload_info").cloned().unwrap_or(Value::Null);
        let Some(pos) = self
            .pending
            .iter()
            .position(|p| p.entity == entity && p.id == id && p.field == field && p.data == info)
        else {
            return err(
                400,
                103,
                "Invalid upload_info",
                Some("upload_info does not match any upload"),
            );
        };
        let p = self.pending.remove(pos);
        let filename = p.data["original_filename"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let value = if field == "image" {
            json!(format!(
                "{}/images/status/transient/thumbnail_pending.png",
                self.url
            ))
        } else {
            json!({"url": format!("{}/file_serve/attachment/{}", self.url, 7000 + self.attachments.len()),
                   "name": filename, "content_type": p.content_type, "link_type": "upload"})
        };
        if let Some(rec) = self
            .records
            .iter_mut()
            .find(|(e, i, _)| e == entity && *i == id)
        {
            rec.2.insert(field.into(), value);
        }
        self.attachments.push(Attachment {
            entity: entity.into(),
            id,
            field: field.into(),
            filename,
            bytes: p.bytes,
            content_type: p.content_type,
        });
        (
            201,
            vec![("content-type".into(), "application/json".into())],
            b" ".to_vec(),
        )
    }

    /// Retires a record: it leaves searches and reads.
    fn retire(&mut self, entity: &str, id: i64) -> Reply {
        let Some(pos) = self
            .records
            .iter()
            .position(|(e, i, _)| e == entity && *i == id)
        else {
            return err(404, 104, "Record not found", None);
        };
        let rec = self.records.remove(pos);
        self.retired.push(rec);
        (204, vec![], Vec::new())
    }

    fn read(&self, entity: &str, id: i64, query: &str) -> Reply {
        if self.record(entity, id).is_none() {
            return err(404, 104, "Record not found", None);
        }
        let fields: Option<Vec<String>> = parse_form(query)
            .get("fields")
            .map(|f| f.split(',').map(str::to_string).collect());
        json_reply(
            200,
            json!({"data": self.render(entity, id, fields.as_deref())}),
        )
    }
}

/// The label and the routed handler of a request.
fn label_of(method: &Method, path: &str) -> String {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ent = |s: &str| entity_of(s).unwrap_or("?").to_string();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["api", "v1", "auth", "access_token"]) => "auth".into(),
        ("POST", ["api", "v1", "entity", e, "_search"]) => format!("search:{}", ent(e)),
        ("POST", ["api", "v1", "entity", e]) => format!("create:{}", ent(e)),
        ("PUT", ["api", "v1", "entity", e, _]) => format!("update:{}", ent(e)),
        ("DELETE", ["api", "v1", "entity", e, _]) => format!("delete:{}", ent(e)),
        ("GET", ["api", "v1", "entity", e, _]) => format!("read:{}", ent(e)),
        ("GET", ["api", "v1", "entity", _, _, f, "_upload"]) => format!("upload_init:{f}"),
        ("POST", ["api", "v1", "entity", _, _, f, "_upload"]) => format!("upload_complete:{f}"),
        ("PUT", ["s3", "bucket", _]) => "upload_put".into(),
        _ => "other".into(),
    }
}

fn route(
    s: &mut Site,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = || err(404, 103, "Not Found", Some("unrouted path"));
    if let ["s3", "bucket", key] = segs.as_slice() {
        return match method.as_str() {
            "PUT" => s.upload_put(key, headers, body),
            _ => not_found(),
        };
    }
    if segs.as_slice() == ["api", "v1", "auth", "access_token"] {
        return match method.as_str() {
            "POST" => s.auth(headers, body),
            _ => not_found(),
        };
    }
    if let Some(r) = s.check_token(headers) {
        return r;
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("vnd+shotgun") {
        return err(406, 103, "Not Acceptable", None);
    }
    let id_of = |x: &str| x.parse::<i64>().ok();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["api", "v1", "entity", e, "_search"]) => match entity_of(e) {
            Some(t) => s.search(t, headers, body),
            None => err(400, 103, "Invalid entity type", None),
        },
        ("POST", ["api", "v1", "entity", e]) => match entity_of(e) {
            Some(t) => s.create(t, headers, body),
            None => err(400, 103, "Invalid entity type", None),
        },
        ("PUT", ["api", "v1", "entity", e, id]) => match (entity_of(e), id_of(id)) {
            (Some(t), Some(id)) => s.update(t, id, headers, body),
            _ => not_found(),
        },
        ("GET", ["api", "v1", "entity", e, id]) => match (entity_of(e), id_of(id)) {
            (Some(t), Some(id)) => s.read(t, id, query),
            _ => not_found(),
        },
        ("DELETE", ["api", "v1", "entity", e, id]) => match (entity_of(e), id_of(id)) {
            (Some(t), Some(id)) => s.retire(t, id),
            _ => not_found(),
        },
        ("GET", ["api", "v1", "entity", e, id, f, "_upload"]) => match (entity_of(e), id_of(id)) {
            (Some(t), Some(id)) => s.upload_init(t, id, f, e, query),
            _ => not_found(),
        },
        ("POST", ["api", "v1", "entity", e, id, f, "_upload"]) => match (entity_of(e), id_of(id)) {
            (Some(t), Some(id)) => s.upload_complete(t, id, f, headers, body),
            _ => not_found(),
        },
        // PATCH and everything else: unrouted.
        _ => not_found(),
    }
}

type Shared = Arc<Mutex<Site>>;

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let label = label_of(&method, &path);
    let (index, fault) = {
        let mut s = state.lock().unwrap();
        let fault = s.take_fault(&label);
        s.requests.push(Req {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            label: label.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            status: 0,
            fault: fault.as_ref().map(|f| format!("{f:?}")),
            at: Instant::now(),
        });
        (s.requests.len() - 1, fault)
    };
    let set_status = |status: u16| {
        state.lock().unwrap().requests[index].status = status;
    };
    match &fault {
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            set_status(*status);
            let mut r = err(
                *status,
                0,
                "Injected fault",
                Some("the fake answered an error on purpose"),
            );
            if let Some(secs) = retry_after {
                r.1.push(("retry-after".into(), secs.to_string()));
            }
            return into_response(r);
        }
        Some(Fault::StallBefore(d)) => tokio::time::sleep(*d).await,
        Some(Fault::ExpireTokens) => {
            let mut s = state.lock().unwrap();
            let past = Instant::now() - Duration::from_millis(1);
            for exp in s.tokens.values_mut() {
                *exp = past;
            }
        }
        _ => {}
    }
    let mut reply = {
        let mut s = state.lock().unwrap();
        route(&mut s, &method, &path, &query, &headers, &body)
    };
    match &fault {
        Some(Fault::CommitThenStatus(status)) => {
            reply = err(
                *status,
                0,
                "Bad Gateway",
                Some("injected after the write committed"),
            );
            set_status(*status);
        }
        Some(Fault::CommitThenStall(d)) => {
            set_status(reply.0);
            tokio::time::sleep(*d).await;
        }
        _ => set_status(reply.0),
    }
    into_response(reply)
}

fn into_response((status, headers, body): Reply) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    r
}

/// The running fake.
pub struct FakeShotGrid {
    pub url: String,
    pub state: Shared,
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeShotGrid {
    /// A site whose one LocalStorage is rooted at `storage_root`, with Project
    /// `demo` and PublishedFileTypes Plate, Reference, Source.
    pub fn start(storage_root: &Path) -> FakeShotGrid {
        let state: Shared = Arc::new(Mutex::new(Site::new(storage_root)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .expect("bind the fake ShotGrid");
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        state.lock().unwrap().url = url.clone();
        let app = Router::new().fallback(handle).with_state(state.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeShotGrid {
            url,
            state,
            rt: Some(rt),
        }
    }

    pub fn script_name(&self) -> String {
        self.state.lock().unwrap().script_name.clone()
    }

    pub fn script_key(&self) -> String {
        self.state.lock().unwrap().script_key.clone()
    }

    /// Injects `fault` into the next request labelled `label` (or a label under
    /// it: `create` matches `create:Version`).
    pub fn inject(&self, label: &str, fault: Fault) {
        self.inject_n(label, 0, 1, fault);
    }

    /// Injects `fault` into `times` requests labelled `label`, after skipping `skip`.
    pub fn inject_n(&self, label: &str, skip: u32, times: u32, fault: Fault) {
        self.state.lock().unwrap().rules.push(Rule {
            label: label.into(),
            skip,
            times,
            fault,
        });
    }

    /// Every recorded request.
    pub fn requests(&self) -> Vec<Req> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Recorded requests with this label.
    pub fn count(&self, label: &str) -> usize {
        self.requests().iter().filter(|r| r.label == label).count()
    }

    /// Records of `entity`: the fields (links as hashes) plus `id`.
    pub fn entities(&self, entity: &str) -> Vec<Map<String, Value>> {
        self.state
            .lock()
            .unwrap()
            .records
            .iter()
            .filter(|(e, _, _)| e == entity)
            .map(|(_, id, m)| {
                let mut m = m.clone();
                m.insert("id".into(), json!(id));
                m
            })
            .collect()
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.state.lock().unwrap().attachments.clone()
    }

    /// Removes a record (e.g. a PublishedFileType the site lacks).
    pub fn remove(&self, entity: &str, field: &str, value: &str) {
        self.state.lock().unwrap().records.retain(|(e, _, m)| {
            !(e == entity && m.get(field).and_then(Value::as_str) == Some(value))
        });
    }

    /// Adds a LocalStorage rooted at `root`.
    pub fn add_storage(&self, code: &str, root: &Path) {
        let root = root.display().to_string();
        self.state.lock().unwrap().insert(
            "LocalStorage",
            json!({"code": code, "linux_path": root.trim_end_matches('/'), "mac_path": null, "windows_path": null}),
        );
    }

    /// Drops a field from the site's schema.
    pub fn remove_field(&self, entity: &str, field: &str) {
        self.state
            .lock()
            .unwrap()
            .removed_fields
            .push((entity.into(), field.into()));
    }

    /// Token lifetime (and what `expires_in` reports unless `reported` is set).
    pub fn set_token_life(&self, life: Duration, reported: Option<u64>) {
        let mut s = self.state.lock().unwrap();
        s.token_life = life;
        s.reported_life = reported;
    }

    /// The id of the Project named `name`.
    pub fn project_id(&self, name: &str) -> i64 {
        self.entities("Project")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_i64())
            .unwrap()
    }
}

impl Drop for FakeShotGrid {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
