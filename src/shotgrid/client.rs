//! The HTTP side of the ShotGrid REST v1 client: bearer auth with one re-auth
//! and replay on a 401, the retry policy, search/create/update and the
//! three-step upload.
//!
//! Retry policy (shotgrid.md §8.7): reads (`GET`, `_search`), idempotent updates
//! (`PUT` of fields) and presigned upload `PUT`s are retried on 429, 5xx and
//! transport errors with capped exponential back-off plus jitter, honouring
//! `Retry-After` up to the cap. Creates are sent once ([`Call::Once`]): the
//! caller reconciles an ambiguous failure by searching (see `entities`). A 401
//! is not ambiguous (nothing was done), so every call is replayed once after
//! re-authenticating. Request and reply bodies are never logged.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::auth::{Auth, Credentials};
use super::errors::ShotGridError;
use crate::config::ShotgridSettings;
use crate::error::Classify;

/// Content type of `_search` with array filters (anything else is a 415).
pub const SEARCH_CONTENT_TYPE: &str = "application/vnd+shotgun.api3_array+json";

/// Whether a call may be repeated on a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reads, idempotent updates, upload PUTs.
    Retryable,
    /// Creates and upload completions: sent once.
    Once,
}

/// Builds a [`ShotGridError::Http`] from an error reply (envelope or not).
pub fn error_from_reply(method: &str, path: &str, status: u16, body: &[u8]) -> ShotGridError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let first = v.get("errors").and_then(|e| e.get(0));
    let code = first
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64)
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default();
    let text = |k: &str| {
        first
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = match (text("title"), text("detail")) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t,
        (None, Some(d)) => d,
        (None, None) => v
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "no error details".into()),
    };
    ShotGridError::Http {
        method: method.into(),
        path: path.into(),
        status,
        code,
        message,
        retry_after: None,
    }
}

/// A ShotGrid site client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    site: String,
    auth: Auth,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    upload_timeout: Duration,
}

impl Client {
    /// A client for the configured site.
    pub fn new(s: &ShotgridSettings, creds: Credentials) -> Result<Client, ShotGridError> {
        let site = s.site.trim().trim_end_matches('/').to_string();
        if !(site.starts_with("http://") || site.starts_with("https://")) {
            return Err(ShotGridError::Config(format!(
                "shotgrid.site {site:?} must be an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(s.connect_timeout_ms.max(1)))
            .timeout(Duration::from_millis(s.request_timeout_ms.max(1)))
            .build()
            .map_err(|e| ShotGridError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            auth: Auth::new(&site, creds),
            http,
            site,
            max_attempts: s.max_attempts.max(1),
            backoff_base: Duration::from_millis(s.backoff_base_ms),
            backoff_cap: Duration::from_millis(s.backoff_cap_ms),
            upload_timeout: Duration::from_millis(s.upload_timeout_ms.max(1)),
        })
    }

    /// The back-off before attempt `attempt + 1` (capped, with jitter), or the
    /// server's `Retry-After` when it asks for longer (still capped).
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let jitter = exp.mul_f64(fastrand::f64() * 0.25);
        let d = (exp + jitter).min(self.backoff_cap);
        match retry_after {
            Some(r) => r.min(self.backoff_cap).max(d),
            None => d,
        }
    }

    /// One API call (path under the site, starting with `/api/v1`); the JSON
    /// reply, or `Null` for an empty or blank body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        call: Call,
    ) -> Result<Value, ShotGridError> {
        let url = format!("{}{}", self.site, path);
        let op = op_of(&method, path);
        // The path without its query, for errors and logs.
        let bare = path.split('?').next().unwrap_or(path);
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let token = match self.auth.token(&self.http).await {
                Ok(t) => t,
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let wait = self.backoff(attempt, e.retry_after());
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "ShotGrid authentication failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some((ctype, bytes)) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *ctype)
                    .body(bytes.clone());
            }
            let t0 = std::time::Instant::now();
            let err = match req.send().await {
                Err(e) => {
                    observe(op, transport_class(&e), t0);
                    transport_error(&method, bare, &e)
                }
                Ok(reply) => {
                    let status = reply.status();
                    let retry_after = reply
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match reply.bytes().await {
                        Err(e) => {
                            observe(op, transport_class(&e), t0);
                            transport_error(&method, bare, &e)
                        }
                        Ok(bytes) => {
                            observe(op, crate::metrics::status_class(status.as_u16()), t0);
                            if status.is_success() {
                                if bytes.iter().all(u8::is_ascii_whitespace) {
                                    return Ok(Value::Null);
                                }
                                return serde_json::from_slice(&bytes).map_err(|e| {
                                    ShotGridError::Protocol {
                                        what: format!("{method} {bare}"),
                                        detail: e.to_string(),
                                    }
                                });
                            }
                            if status == StatusCode::UNAUTHORIZED && !reauthed {
                                tracing::info!(%method, path = bare, "ShotGrid token refused (401); re-authenticating once");
                                self.auth.invalidate(&token).await;
                                reauthed = true;
                                attempt -= 1;
                                continue;
                            }
                            let mut err =
                                error_from_reply(method.as_str(), bare, status.as_u16(), &bytes);
                            if let ShotGridError::Http { retry_after: r, .. } = &mut err {
                                *r = retry_after;
                            }
                            err
                        }
                    }
                }
            };
            if call == Call::Retryable && err.is_retryable() && attempt < self.max_attempts {
                let wait = self.backoff(attempt, err.retry_after());
                tracing::warn!(%method, path = bare, attempt, wait_ms = wait.as_millis() as u64, error = %err, "ShotGrid call failed; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(err);
        }
    }

    /// `_search` with array filters; every page.
    pub async fn search(
        &self,
        entity: &str,
        filters: Value,
        fields: &[&str],
    ) -> Result<Vec<Value>, ShotGridError> {
        let path = format!("/api/v1/entity/{entity}/_search");
        let size = 500;
        let mut out = Vec::new();
        for number in 1.. {
            let body = json!({
                "filters": filters,
                "fields": fields,
                "page": {"size": size, "number": number},
            });
            let reply = self
                .call(
                    Method::POST,
                    &path,
                    Some((SEARCH_CONTENT_TYPE, body.to_string().into_bytes())),
                    Call::Retryable,
                )
                .await?;
            let data = reply.get("data").and_then(Value::as_array).ok_or_else(|| {
                ShotGridError::Protocol {
                    what: format!("search of {entity}"),
                    detail: "no data array".into(),
                }
            })?;
            // `links.next` exists even on the last page: stop on a short page.
            let n = data.len();
            out.extend(data.iter().cloned());
            if n < size {
                break;
            }
        }
        Ok(out)
    }

    /// Creates a record (sent once); the created record.
    pub async fn create(&self, entity: &str, data: &Value) -> Result<Value, ShotGridError> {
        let path = format!("/api/v1/entity/{entity}");
        let reply = self
            .call(
                Method::POST,
                &path,
                Some(("application/json", data.to_string().into_bytes())),
                Call::Once,
            )
            .await?;
        reply
            .get("data")
            .cloned()
            .ok_or_else(|| ShotGridError::Protocol {
                what: format!("create of {entity}"),
                detail: "no data".into(),
            })
    }

    /// Retires a record (`DELETE`; idempotent, retried).
    pub async fn delete(&self, entity: &str, id: i64) -> Result<(), ShotGridError> {
        let path = format!("/api/v1/entity/{entity}/{id}");
        self.call(Method::DELETE, &path, None, Call::Retryable)
            .await
            .map(|_| ())
    }

    /// Updates fields of a record (idempotent, retried).
    pub async fn update(&self, entity: &str, id: i64, data: &Value) -> Result<(), ShotGridError> {
        let path = format!("/api/v1/entity/{entity}/{id}");
        self.call(
            Method::PUT,
            &path,
            Some(("application/json", data.to_string().into_bytes())),
            Call::Retryable,
        )
        .await
        .map(|_| ())
    }

    /// Reads `field` of a record (`Null` when unset).
    pub async fn read_field(
        &self,
        entity: &str,
        id: i64,
        field: &str,
    ) -> Result<Value, ShotGridError> {
        let path = format!("/api/v1/entity/{entity}/{id}?fields={}", urlencode(field));
        let reply = self.call(Method::GET, &path, None, Call::Retryable).await?;
        Ok(reply
            .pointer(&format!("/data/attributes/{field}"))
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Uploads `file` into `field` of a record: init, presigned PUT with a
    /// Content-Length and no Authorization, completion (201, one-space body).
    /// A failed attempt redoes all three steps (presigned URLs belong to one
    /// init), up to the attempt bound. A completion whose reply is lost is
    /// checked by re-reading the field (it changes when the completion
    /// committed), so an upload is not completed twice.
    pub async fn upload(
        &self,
        entity: &str,
        id: i64,
        field: &str,
        file: &Path,
    ) -> Result<(), ShotGridError> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| ShotGridError::File {
                path: file.display().to_string(),
                detail: e.to_string(),
            })?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let before = self.read_field(entity, id, field).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(entity, id, field, &name, &bytes).await {
                Ok(()) => return Ok(()),
                Err(Upload::Completion(e)) if e.is_retryable() => {
                    // Ambiguous: the completion may have committed.
                    let now = self.read_field(entity, id, field).await?;
                    if !now.is_null() && now != before {
                        tracing::info!(
                            entity,
                            id,
                            field,
                            "ambiguous upload completion reconciled: it had committed"
                        );
                        return Ok(());
                    }
                    if attempt >= self.max_attempts {
                        return Err(e);
                    }
                    tracing::warn!(entity, id, field, attempt, error = %e, "ShotGrid upload completion failed; redoing all three steps");
                    tokio::time::sleep(self.backoff(attempt, e.retry_after())).await;
                }
                Err(Upload::Before(e)) if e.is_retryable() && attempt < self.max_attempts => {
                    let wait = self.backoff(attempt, e.retry_after());
                    tracing::warn!(entity, id, field, attempt, error = %e, "ShotGrid upload failed; redoing all three steps");
                    tokio::time::sleep(wait).await;
                }
                Err(Upload::Before(e) | Upload::Completion(e)) => return Err(e),
            }
        }
    }

    async fn upload_once(
        &self,
        entity: &str,
        id: i64,
        field: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), Upload> {
        let init_path = format!(
            "/api/v1/entity/{entity}/{id}/{field}/_upload?filename={}",
            urlencode(name)
        );
        let init = self
            .call(Method::GET, &init_path, None, Call::Retryable)
            .await
            .map_err(Upload::Before)?;
        let bad = |d: &str| {
            Upload::Before(ShotGridError::Protocol {
                what: format!("upload init of {entity} {id} {field}"),
                detail: d.into(),
            })
        };
        let data = init.get("data").cloned().ok_or_else(|| bad("no data"))?;
        let put_url = init
            .pointer("/links/upload")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no links.upload"))?
            .to_string();
        let complete = init
            .pointer("/links/complete_upload")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no links.complete_upload"))?
            .to_string();
        if !complete.starts_with("/api/") {
            return Err(bad("links.complete_upload is not a site path"));
        }
        // The presigned PUT: retried on its own (same URL) on 5xx/transport.
        // No Authorization header (the URL is signed), a known length.
        let put_path = "<presigned upload URL>";
        let mut put_attempt = 0;
        loop {
            put_attempt += 1;
            let t0 = std::time::Instant::now();
            let sent = self
                .http
                .put(&put_url)
                .timeout(self.upload_timeout)
                .header(reqwest::header::CONTENT_TYPE, mime_of(name))
                .header(reqwest::header::CONTENT_LENGTH, bytes.len())
                .body(bytes.to_vec())
                .send()
                .await;
            let err = match sent {
                Ok(r) if r.status().is_success() => {
                    observe("upload", "2xx", t0);
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    observe("upload", crate::metrics::status_class(status), t0);
                    let body = r.bytes().await.unwrap_or_default();
                    error_from_reply("PUT", put_path, status, &body)
                }
                Err(e) => {
                    observe("upload", transport_class(&e), t0);
                    transport_error(&Method::PUT, put_path, &e)
                }
            };
            if e_is_transient(&err) && put_attempt < self.max_attempts {
                tracing::warn!(entity, id, field, attempt = put_attempt, error = %err, "ShotGrid upload PUT failed; retrying it");
                tokio::time::sleep(self.backoff(put_attempt, None)).await;
                continue;
            }
            return Err(Upload::Before(err));
        }
        // Completion at the path as given (it already holds /api/v1).
        let body = json!({"upload_info": data, "upload_data": {}});
        self.call(
            Method::POST,
            &complete,
            Some(("application/json", body.to_string().into_bytes())),
            Call::Once,
        )
        .await
        .map_err(Upload::Completion)?;
        Ok(())
    }
}

/// Where an upload attempt failed.
enum Upload {
    /// Before the completion: nothing was attached.
    Before(ShotGridError),
    /// The completion: it may have been attached.
    Completion(ShotGridError),
}

fn e_is_transient(e: &ShotGridError) -> bool {
    e.is_retryable()
}

/// The metrics operation of a call: `read`, `write` or `upload`.
fn op_of(method: &Method, path: &str) -> &'static str {
    let bare = path.split('?').next().unwrap_or(path);
    if bare.ends_with("/_upload") {
        "upload"
    } else if *method == Method::GET || bare.ends_with("/_search") {
        "read"
    } else {
        "write"
    }
}

fn transport_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else {
        "network"
    }
}

fn observe(op: &str, class: &str, t0: std::time::Instant) {
    crate::metrics::observe_tracker_request(op, class, t0.elapsed().as_secs_f64());
}

/// A transport failure; the message never holds the URL (a presigned URL
/// carries a signature) nor a body.
pub(crate) fn transport_error(method: &Method, path: &str, e: &reqwest::Error) -> ShotGridError {
    let mut detail = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    ShotGridError::Transport {
        method: method.to_string(),
        path: path.into(),
        detail,
    }
}

fn mime_of(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
