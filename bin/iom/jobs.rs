//! `iom jobs`: the Tractor job monitor (status, wait, failed tasks).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use iom::config::Settings;
use iom::tractor::client::{EngineClient, EngineError, JobInfo, JobState, TaskInfo};
use iom::tractor::JobRecords;

/// Exit codes of `iom jobs`.
pub mod code {
    /// The job is done.
    pub const DONE: u8 = 0;
    /// The job failed (some task in error, nothing left to run), or was deleted.
    pub const FAILED: u8 = 1;
    /// Bad usage, or the publish is not mirrored / no such job.
    pub const USAGE: u8 = 2;
    /// The engine is unreachable.
    pub const UNREACHABLE: u8 = 3;
    /// Still running (or paused).
    pub const RUNNING: u8 = 4;
    /// `wait --timeout` expired.
    pub const TIMEOUT: u8 = 5;
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// The job's state and its tasks' states.
    Status(JobArgs),
    /// Wait until the job is done or failed.
    Wait(WaitArgs),
    /// The job's failed tasks.
    Failed(JobArgs),
}

#[derive(Args)]
pub struct JobArgs {
    /// A publish (graph id or work folder) or a Tractor jid.
    pub job: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Give up after this many seconds (exit 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

fn resolve(settings: &Settings, job: &str) -> Result<u64, String> {
    if let Ok(jid) = job.parse::<u64>() {
        return Ok(jid);
    }
    let p = Path::new(job);
    let graph_id = if p.join("manifest.json").is_file() {
        iom::store::WorkDir::open(p)
            .and_then(|w| w.manifest())
            .map(|g| g.id.0)
            .map_err(|e| e.to_string())?
    } else {
        job.to_string()
    };
    let records = JobRecords::load(&JobRecords::path_for(settings)).map_err(|e| e.to_string())?;
    match records.get(&graph_id) {
        Some(r) if r.jid > 0 => Ok(r.jid),
        _ => Err(format!(
            "publish {graph_id} is not mirrored in Tractor (yet): is iom-bridge running?"
        )),
    }
}

fn state_code(s: JobState) -> u8 {
    match s {
        JobState::Done => code::DONE,
        JobState::Failed | JobState::Deleted => code::FAILED,
        JobState::Running | JobState::Paused => code::RUNNING,
    }
}

fn print(job: &JobInfo, tasks: &[TaskInfo], only_failed: bool, json: bool) {
    let tasks: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| !only_failed || t.state == "error")
        .collect();
    if json {
        let v = serde_json::json!({
            "jid": job.jid, "title": job.title, "state": job.state(),
            "numtasks": job.numtasks, "numdone": job.numdone, "numerror": job.numerror,
            "numactive": job.numactive, "tasks": tasks,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "job {} {:?}: {:?} ({}/{} done, {} error, {} active)",
        job.jid,
        job.title,
        job.state(),
        job.numdone,
        job.numtasks,
        job.numerror,
        job.numactive
    );
    for t in tasks {
        println!("  {:>3} {:<8} {} ({})", t.tid, t.state, t.title, t.id);
    }
}

pub fn run_jobs(settings: &Settings, cmd: JobsCommand) -> anyhow::Result<u8> {
    let (args, timeout, mode) = match cmd {
        JobsCommand::Status(a) => (a, None, 's'),
        JobsCommand::Failed(a) => (a, None, 'f'),
        JobsCommand::Wait(w) => (w.job, w.timeout, 'w'),
    };
    let jid = match resolve(settings, &args.job) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("iom: {e}");
            return Ok(code::USAGE);
        }
    };
    let client = EngineClient::from_settings(&settings.tractor);
    let rt = tokio::runtime::Runtime::new()?;
    let start = Instant::now();
    rt.block_on(async {
        loop {
            let r: Result<Option<(JobInfo, Vec<TaskInfo>)>, EngineError> = async {
                match client.job(jid).await? {
                    Some(j) => Ok(Some((j, client.tasks(jid).await?))),
                    None => Ok(None),
                }
            }
            .await;
            let (job, tasks) = match r {
                Ok(Some(x)) => x,
                Ok(None) => {
                    eprintln!("iom: the engine {} has no job {jid}", client.engine());
                    return Ok(code::USAGE);
                }
                Err(e @ EngineError::Unreachable { .. }) => {
                    eprintln!("iom: {e}");
                    return Ok(code::UNREACHABLE);
                }
                Err(e) => return Err(e.into()),
            };
            let state = job.state();
            match mode {
                'w' if state_code(state) == code::RUNNING => {
                    if timeout.is_some_and(|t| start.elapsed() >= Duration::from_secs(t)) {
                        print(&job, &tasks, false, args.json);
                        return Ok(code::TIMEOUT);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                'f' => {
                    print(&job, &tasks, true, args.json);
                    let failed = tasks.iter().any(|t| t.state == "error");
                    return Ok(if failed {
                        code::FAILED
                    } else {
                        state_code(state)
                    });
                }
                _ => {
                    print(&job, &tasks, false, args.json);
                    return Ok(state_code(state));
                }
            }
        }
    })
}
