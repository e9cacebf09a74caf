//! Tractor engine client over HTTP (reference §4–§6): spool, login for a `tsid`,
//! job and task queries, and the controls (retry, skip, pause, interrupt).
//!
//! The engine address is `TRACTOR_ENGINE` when set, else `tractor.engine`. The
//! password (only when one is configured) never appears in logs or errors.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Secret, TractorSettings};
use crate::error::{Classify, ErrorClass};

use super::script::{self, ScriptError};

/// Environment variable overriding `tractor.engine`.
pub const ENGINE_ENV: &str = "TRACTOR_ENGINE";

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached (down, refused, timed out).
    #[error("Tractor engine {engine} unreachable: {reason}")]
    Unreachable {
        /// host:port.
        engine: String,
        /// The transport error.
        reason: String,
    },
    /// The engine answered with an error.
    #[error("Tractor engine refused {verb}: HTTP {status}, rc {rc}: {msg}")]
    Refused {
        /// The request (`spool`, `queue?q=tretry` …).
        verb: String,
        /// HTTP status.
        status: u16,
        /// The reply's `rc`.
        rc: i64,
        /// The reply's `msg`.
        msg: String,
    },
    /// The reply is not what the protocol says.
    #[error("unexpected reply to {verb}: {why}")]
    Reply {
        /// The request.
        verb: String,
        /// What is wrong.
        why: String,
    },
    /// The script failed validation; nothing was sent.
    #[error("job script rejected before spooling: {0}")]
    Script(#[from] ScriptError),
}

impl Classify for EngineError {
    fn class(&self) -> ErrorClass {
        match self {
            EngineError::Unreachable { .. } => ErrorClass::Transient,
            EngineError::Refused { status, .. } if *status >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// A job as the engine reports it (`job` table columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Job id.
    pub jid: u64,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Task counters.
    #[serde(default)]
    pub numtasks: u64,
    /// Done (or skipped).
    #[serde(default)]
    pub numdone: u64,
    /// In error.
    #[serde(default)]
    pub numerror: u64,
    /// Running.
    #[serde(default)]
    pub numactive: u64,
    /// Ready.
    #[serde(default)]
    pub numready: u64,
    /// Paused since (empty/absent: not paused).
    #[serde(default)]
    pub pausetime: Option<serde_json::Value>,
    /// Deleted since.
    #[serde(default)]
    pub deletetime: Option<serde_json::Value>,
}

/// A job's overall state, from its counters (reference §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Every task done.
    Done,
    /// Some task in error and nothing else can run.
    Failed,
    /// Paused.
    Paused,
    /// Deleted.
    Deleted,
    /// Still going.
    Running,
}

fn set(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(_) => true,
    }
}

impl JobInfo {
    /// The overall state.
    pub fn state(&self) -> JobState {
        if set(&self.deletetime) {
            JobState::Deleted
        } else if self.numtasks > 0 && self.numdone == self.numtasks {
            JobState::Done
        } else if self.numerror > 0 && self.numactive == 0 && self.numready == 0 {
            JobState::Failed
        } else if set(&self.pausetime) {
            JobState::Paused
        } else {
            JobState::Running
        }
    }
}

/// A task as the engine reports it (`task` table columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Job id.
    #[serde(default)]
    pub jid: u64,
    /// Task id within the job.
    pub tid: u64,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// The `-id` (iom task id).
    #[serde(default)]
    pub id: String,
    /// `blocked`, `ready`, `active`, `error`, `done`.
    #[serde(default)]
    pub state: String,
    /// Progress percent.
    #[serde(default)]
    pub progress: Option<f64>,
    /// Retries so far.
    #[serde(default)]
    pub retrycount: Option<u64>,
}

/// The engine client.
pub struct EngineClient {
    http: reqwest::Client,
    engine: String,
    user: String,
    password: Option<Secret>,
    tsid: Mutex<Option<String>>,
}

impl std::fmt::Debug for EngineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineClient")
            .field("engine", &self.engine)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `TRACTOR_ENGINE` if set, else the configured engine.
pub fn engine_address(cfg: &TractorSettings) -> String {
    std::env::var(ENGINE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| cfg.engine.clone())
}

fn hex(s: &str) -> String {
    s.chars().map(|c| format!("{:02x}", c as u32)).collect()
}

/// The login proof: lower-case hex of `challenge|hash`, with the built-in hash
/// `1` + hex of `password[i] ^ challenge[i]` (empty without a password).
pub fn login_proof(challenge: &str, password: Option<&str>) -> String {
    let hash = match password {
        Some(p) if !p.is_empty() => {
            let x: String = p
                .chars()
                .zip(challenge.chars())
                .map(|(a, b)| format!("{:02x}", (a as u32 ^ b as u32) & 0xff))
                .collect();
            format!("1{x}")
        }
        _ => String::new(),
    };
    hex(&format!("{challenge}|{hash}"))
}

#[derive(Deserialize)]
struct Rc {
    #[serde(default)]
    rc: i64,
    #[serde(default)]
    msg: String,
}

impl EngineClient {
    /// A client for `engine` (`host:port`).
    pub fn new(
        engine: impl Into<String>,
        user: impl Into<String>,
        password: Option<Secret>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("iom-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        EngineClient {
            http,
            engine: engine.into(),
            user: user.into(),
            password,
            tsid: Mutex::new(None),
        }
    }

    /// From settings (`TRACTOR_ENGINE` wins); the password only when it resolves.
    pub fn from_settings(cfg: &TractorSettings) -> Self {
        let password = cfg.password.resolve("tractor.password").ok();
        EngineClient::new(engine_address(cfg), cfg.user.clone(), password)
    }

    /// `host:port`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// The dashboard link of a job.
    pub fn dashboard_url(&self, jid: u64) -> String {
        format!("http://{}/tv/#jid={jid}", self.engine)
    }

    async fn call(
        &self,
        verb: &str,
        query: &[(&str, String)],
        body: Option<(&'static str, String)>,
    ) -> Result<serde_json::Value, EngineError> {
        let url = format!("http://{}/Tractor/{verb}", self.engine);
        let what = format!(
            "{verb}{}",
            query
                .iter()
                .find(|(k, _)| *k == "q")
                .map(|(_, v)| format!("?q={}", v.split('(').next().unwrap_or(v)))
                .unwrap_or_default()
        );
        let mut req = self
            .http
            .post(&url)
            .query(query)
            .header("X-Tractor-Blade", "0")
            .header("Cookie", format!("TractorUser={}", self.user));
        req = match body {
            Some((ct, b)) => req.header("Content-Type", ct).body(b),
            None => req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(""),
        };
        let resp = req.send().await.map_err(|e| EngineError::Unreachable {
            engine: self.engine.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| EngineError::Unreachable {
            engine: self.engine.clone(),
            reason: e.without_url().to_string(),
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::Reply {
            verb: what.clone(),
            why: format!(
                "HTTP {status}, not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        let rc: Rc = serde_json::from_value(v.clone()).unwrap_or(Rc {
            rc: 0,
            msg: String::new(),
        });
        if status != 200 || rc.rc != 0 {
            return Err(EngineError::Refused {
                verb: what,
                status,
                rc: rc.rc,
                msg: rc.msg,
            });
        }
        Ok(v)
    }

    /// Validates `script`, spools it (blocking, so parse errors come back) and
    /// returns the new job's jid.
    pub async fn spool(&self, script: &str) -> Result<u64, EngineError> {
        script::validate(script)?;
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/".into());
        let v = self
            .call(
                "spool",
                &[
                    ("spvers", "2.0".into()),
                    ("hnm", crate::events::hostname()),
                    ("jobOwner", self.user.clone()),
                    ("jobAuthor", "iom".into()),
                    ("jobFile", "no filename specified".into()),
                    ("cwd", cwd),
                    ("blocking", "spool".into()),
                ],
                Some(("application/tractor-spool", script.to_string())),
            )
            .await?;
        v.get("jid")
            .and_then(|j| {
                j.as_u64()
                    .or_else(|| j.as_str().and_then(|s| s.parse().ok()))
            })
            .filter(|j| *j > 0)
            .ok_or_else(|| EngineError::Reply {
                verb: "spool".into(),
                why: format!("no jid in {v}"),
            })
    }

    /// Logs in (challenge, then proof) and keeps the `tsid`.
    pub async fn login(&self) -> Result<String, EngineError> {
        let v = self
            .call("monitor", &[("q", "gentoken".into())], None)
            .await?;
        let challenge = v
            .get("challenge")
            .and_then(|c| c.as_str())
            .ok_or_else(|| EngineError::Reply {
                verb: "monitor?q=gentoken".into(),
                why: "no challenge".into(),
            })?
            .to_string();
        let proof = login_proof(&challenge, self.password.as_ref().map(|p| p.expose()));
        let v = self
            .call(
                "monitor",
                &[
                    ("q", "login".into()),
                    ("user", self.user.clone()),
                    ("c", proof),
                ],
                None,
            )
            .await?;
        let tsid = v
            .get("tsid")
            .and_then(|t| t.as_str())
            .ok_or_else(|| EngineError::Reply {
                verb: "monitor?q=login".into(),
                why: "no tsid".into(),
            })?
            .to_string();
        *self.tsid.lock().unwrap_or_else(|e| e.into_inner()) = Some(tsid.clone());
        Ok(tsid)
    }

    async fn tsid(&self) -> Result<String, EngineError> {
        let cur = self.tsid.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match cur {
            Some(t) => Ok(t),
            None => self.login().await,
        }
    }

    /// A call that needs a session; logs in again once when the session is refused.
    async fn authed(
        &self,
        verb: &str,
        mut q: Vec<(&str, String)>,
    ) -> Result<serde_json::Value, EngineError> {
        let tsid = self.tsid().await?;
        q.push(("tsid", tsid));
        match self.call(verb, &q, None).await {
            Err(EngineError::Refused {
                status: 401 | 403, ..
            }) => {
                *self.tsid.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let t = self.login().await?;
                q.pop();
                q.push(("tsid", t));
                self.call(verb, &q, None).await
            }
            r => r,
        }
    }

    async fn select(
        &self,
        table: &str,
        clause: &str,
        cols: &str,
    ) -> Result<Vec<serde_json::Value>, EngineError> {
        let q = format!(
            "tractorselect('{table}', '{}', '{cols}', '', NULL, 'f', '')",
            clause.replace('\'', "''")
        );
        let v = self.authed("db", vec![("q", q)]).await?;
        match v.get("rows") {
            Some(serde_json::Value::Array(rows)) => Ok(rows.clone()),
            other => Err(EngineError::Reply {
                verb: format!("db tractorselect {table}"),
                why: format!("rows is {other:?}"),
            }),
        }
    }

    /// The job `jid` (`None` when the engine has no such job).
    pub async fn job(&self, jid: u64) -> Result<Option<JobInfo>, EngineError> {
        let rows = self
            .select(
                "job",
                &format!("jid={jid}"),
                "jid,title,numtasks,numdone,numerror,numactive,numready,pausetime,deletetime",
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| {
                serde_json::from_value(r).map_err(|e| EngineError::Reply {
                    verb: "db job".into(),
                    why: e.to_string(),
                })
            })
            .transpose()
    }

    /// The live job mirroring graph `graph_id` (found by the graph id in its
    /// `-comment`), for a bridge that lost a spool's reply.
    pub async fn find_job_of_graph(&self, graph_id: &str) -> Result<Option<u64>, EngineError> {
        let rows = self
            .select(
                "job",
                &format!("comment like \"{graph_id}\" and not deletetime"),
                "jid,title,numtasks,numdone,numerror,numactive,numready,pausetime,deletetime",
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("jid").and_then(|j| j.as_u64()))
            .max())
    }

    /// The tasks of job `jid`.
    pub async fn tasks(&self, jid: u64) -> Result<Vec<TaskInfo>, EngineError> {
        let rows = self
            .select(
                "task",
                &format!("jid={jid}"),
                "jid,tid,title,id,state,progress,retrycount",
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                serde_json::from_value(r).map_err(|e| EngineError::Reply {
                    verb: "db task".into(),
                    why: e.to_string(),
                })
            })
            .collect()
    }

    async fn queue(
        &self,
        q: &str,
        jid: u64,
        extra: Vec<(&str, String)>,
    ) -> Result<(), EngineError> {
        let mut params = vec![("q", q.to_string()), ("jid", jid.to_string())];
        params.extend(extra);
        self.authed("queue", params).await.map(|_| ())
    }

    /// Retries one task.
    pub async fn retry(&self, jid: u64, tid: u64) -> Result<(), EngineError> {
        self.queue("tretry", jid, vec![("tid", tid.to_string())])
            .await
    }

    /// Retries every errored task of a job.
    pub async fn retry_errors(&self, jid: u64) -> Result<(), EngineError> {
        self.queue("jretry", jid, vec![("tsubset", "error".into())])
            .await
    }

    /// Skips one task (it counts as done).
    pub async fn skip(&self, jid: u64, tid: u64) -> Result<(), EngineError> {
        self.queue("tskip", jid, vec![("tid", tid.to_string())])
            .await
    }

    /// Pauses or unpauses a job.
    pub async fn pause(&self, jid: u64, paused: bool) -> Result<(), EngineError> {
        self.queue(
            "jattr",
            jid,
            vec![("set_pause", u8::from(paused).to_string())],
        )
        .await
    }

    /// Interrupts a task (kills it, leaves it in error) or the whole job.
    pub async fn interrupt(&self, jid: u64, tid: Option<u64>) -> Result<(), EngineError> {
        let extra = tid
            .map(|t| vec![("tid", t.to_string())])
            .unwrap_or_default();
        self.queue("jinterrupt", jid, extra).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_proof_matches_the_reference_example() {
        assert_eq!(login_proof("5f2a1c", None), "3566326131637c");
        // With a password the hash is "1" + xor digits.
        assert_eq!(login_proof("ab", Some("ab")), hex("ab|10000"));
    }

    #[test]
    fn job_state_from_counters() {
        let mut j = JobInfo {
            jid: 1,
            numtasks: 3,
            numdone: 3,
            ..JobInfo::default()
        };
        assert_eq!(j.state(), JobState::Done);
        j.numdone = 1;
        j.numerror = 1;
        assert_eq!(j.state(), JobState::Failed);
        j.numactive = 1;
        assert_eq!(j.state(), JobState::Running);
    }
}
