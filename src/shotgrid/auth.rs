//! Client-credentials authentication: the script name and key, form-encoded, to
//! `/api/v1/auth/access_token`. The token is cached, renewed a margin before it
//! expires (60 s, or a third of a short lifetime) and after a 401.
//!
//! The key is only ever placed in the form body of this one request; request
//! bodies are never logged, and [`Secret`] prints as `***`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::client::{error_from_reply, transport_error};
use super::errors::ShotGridError;
use crate::config::Secret;

/// Script credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Script name (`client_id`).
    pub script_name: Secret,
    /// Script key (`client_secret`).
    pub script_key: Secret,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// The token cache.
pub struct Auth {
    url: String,
    creds: Credentials,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("url", &self.url).finish()
    }
}

impl Auth {
    /// Authenticates against `site` with `creds` (lazily, on first use).
    pub fn new(site: &str, creds: Credentials) -> Self {
        Auth {
            url: format!("{}/api/v1/auth/access_token", site.trim_end_matches('/')),
            creds,
            token: Mutex::new(None),
        }
    }

    /// A live token: the cached one, or a new one when it is about to expire.
    pub async fn token(&self, http: &reqwest::Client) -> Result<String, ShotGridError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let t = self.fetch(http).await?;
        let value = t.value.clone();
        *guard = Some(t);
        Ok(value)
    }

    /// Forgets `token` after a 401 (unless another call already renewed it).
    pub async fn invalidate(&self, token: &str) {
        let mut guard = self.token.lock().await;
        if guard.as_ref().is_some_and(|t| t.value == token) {
            *guard = None;
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Token, ShotGridError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.creds.script_name.expose()),
            ("client_secret", self.creds.script_key.expose()),
        ];
        let path = "/api/v1/auth/access_token";
        let t0 = std::time::Instant::now();
        let observe = |class: &str| {
            crate::metrics::observe_tracker_request("auth", class, t0.elapsed().as_secs_f64())
        };
        // The form body holds the key: it is never logged, and a transport
        // error is built without the request (see `transport_error`).
        let reply = http
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                observe(if e.is_timeout() { "timeout" } else { "network" });
                transport_error(&reqwest::Method::POST, path, &e)
            })?;
        let status = reply.status();
        let body = reply.bytes().await.unwrap_or_default();
        observe(crate::metrics::status_class(status.as_u16()));
        if !status.is_success() {
            return Err(error_from_reply("POST", path, status.as_u16(), &body));
        }
        let t: TokenReply = serde_json::from_slice(&body).map_err(|e| ShotGridError::Protocol {
            what: "authentication".into(),
            detail: e.to_string(),
        })?;
        let life = Duration::from_secs(t.expires_in.unwrap_or(600));
        let margin = Duration::from_secs(60).min(life / 3);
        Ok(Token {
            value: t.access_token,
            renew_at: Instant::now() + life - margin,
        })
    }
}
