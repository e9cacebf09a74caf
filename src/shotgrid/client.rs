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
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let token = self.auth.token(&self.http).await?;
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
            let (err, retry_after) = match req.send().await {
                Err(e) => (
                    ShotGridError::Transport {
                        method: method.to_string(),
                        path: path.into(),
                        detail: e.without_url().to_string(),
                    },
                    None,
                ),
                Ok(reply) => {
                    let status = reply.status();
                    let retry_after = reply
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = match reply.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            let err = ShotGridError::Transport {
                                method: method.to_string(),
                                path: path.into(),
                                detail: e.without_url().to_string(),
                            };
                            if call == Call::Retryable && attempt < self.max_attempts {
                                tokio::time::sleep(self.backoff(attempt, None)).await;
                                continue;
                            }
                            return Err(err);
                        }
                    };
                    if status.is_success() {
                        if bytes.iter().all(u8::is_ascii_whitespace) {
                            return Ok(Value::Null);
                        }
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            ShotGridError::Protocol {
                                what: format!("{method} {path}"),
                                detail: e.to_string(),
                            }
                        });
                    }
                    if status == StatusCode::UNAUTHORIZED && !reauthed {
                        tracing::info!(%method, path, "ShotGrid token refused (401); re-authenticating once");
                        self.auth.invalidate(&token).await;
                        reauthed = true;
                        attempt -= 1;
                        continue;
                    }
                    (
                        error_from_reply(method.as_str(), path, status.as_u16(), &bytes),
                        retry_after,
                    )
                }
            };
            let transient = crate::error::Classify::is_retryable(&err);
            if call == Call::Retryable && transient && attempt < self.max_attempts {
                let wait = self.backoff(attempt, retry_after);
                tracing::warn!(%method, path, attempt, wait_ms = wait.as_millis() as u64, error = %err, "ShotGrid call failed; retrying");
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

    /// Uploads `file` into `field` of a record: init, presigned PUT with a
    /// Content-Length and no Authorization, completion (201, one-space body).
    /// A failed attempt redoes all three steps (presigned URLs belong to one
    /// init), up to the attempt bound.
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(entity, id, field, &name, &bytes).await {
                Ok(()) => return Ok(()),
                Err(e) if e_is_transient(&e) && attempt < self.max_attempts => {
                    let wait = self.backoff(attempt, None);
                    tracing::warn!(entity, id, field, attempt, error = %e, "ShotGrid upload failed; redoing all three steps");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
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
    ) -> Result<(), ShotGridError> {
        let init_path = format!(
            "/api/v1/entity/{entity}/{id}/{field}/_upload?filename={}",
            urlencode(name)
        );
        let init = self
            .call(Method::GET, &init_path, None, Call::Retryable)
            .await?;
        let bad = |d: &str| ShotGridError::Protocol {
            what: format!("upload init of {entity} {id} {field}"),
            detail: d.into(),
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
        // The presigned PUT: retried on its own (same URL) on 5xx/transport.
        let mut put_attempt = 0;
        loop {
            put_attempt += 1;
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
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    error_from_reply("PUT", "<presigned upload URL>", status, &body)
                }
                Err(e) => ShotGridError::Transport {
                    method: "PUT".into(),
                    path: "<presigned upload URL>".into(),
                    detail: e.without_url().to_string(),
                },
            };
            if e_is_transient(&err) && put_attempt < self.max_attempts {
                tokio::time::sleep(self.backoff(put_attempt, None)).await;
                continue;
            }
            return Err(err);
        }
        // Completion at the path as given (it already holds /api/v1).
        let body = json!({"upload_info": data, "upload_data": {}});
        self.call(
            Method::POST,
            &complete,
            Some(("application/json", body.to_string().into_bytes())),
            Call::Once,
        )
        .await?;
        Ok(())
    }
}

fn e_is_transient(e: &ShotGridError) -> bool {
    crate::error::Classify::is_retryable(e)
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
