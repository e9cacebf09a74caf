//! `iom publish | status | resume | dlq`: glue between the CLI and the library's
//! planner, work folders, runtime, embedded runner and queue.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use iom::config::Settings;
use iom::embedded::{self, EmbeddedOptions};
use iom::events::TaskEvent;
use iom::plan::{self, PlanOptions};
use iom::queue::{Broker, BrokerConfig, DlqAction};
use iom::runtime::{self, RuntimeCtx};
use iom::store::{GraphState, GraphStatus, TaskState, WorkDir};
use iom::task::Graph;
use iom::worker::{self, BrokerTransport};

use super::{exit, DlqCommand, PublishArgs, ResumeArgs, StatusArgs};

fn runtime_ctx(settings: &Settings) -> anyhow::Result<Arc<RuntimeCtx>> {
    Ok(Arc::new(RuntimeCtx {
        settings: Arc::new(settings.clone()),
        worker: worker::identity(),
        tracker: iom::tracker::open_tracker(settings)?,
        cancel: worker::new_cancel_flag(),
    }))
}

fn tokio_rt() -> anyhow::Result<Rt> {
    tokio::runtime::Runtime::new()
        .map(|rt| Rt(Some(rt)))
        .context("cannot start the async runtime")
}

/// The CLI's runtime. Dropping it waits at most 2 s for blocking threads: a step
/// abandoned at shutdown (stuck in a system call) must not keep `iom` from
/// exiting.
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Plans the scanlist's checked rows; prints the refusals and returns `None` when
/// any row is bad (nothing is published then).
fn plan_scanlist(settings: &Settings, args: &PublishArgs) -> anyhow::Result<Option<plan::Plan>> {
    let delivery = args
        .scanlist
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let delivery = std::path::absolute(&delivery)?;
    let sheet = match iom::scanlist::read::read_with_thumbnail_dir(
        &args.scanlist,
        &settings.scanlist,
        Some(&delivery),
        &settings.thumbnail.dir_name,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iom: {e}; nothing was published");
            return Ok(None);
        }
    };
    for w in &sheet.warnings {
        eprintln!("warning: {}: {w}", args.scanlist.display());
    }
    let tracker = iom::tracker::open_tracker(settings)?;
    // A tracker that cannot be read must stop the plan: guessing "no versions"
    // would number a publish over one the tracker already holds.
    let tracker_error: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let versions =
        |k: &plan::PublishInfoKey| match tracker.find_versions(&k.project, &k.shot, &k.seq_type) {
            Ok(v) => v,
            Err(e) => {
                tracker_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("{} {} {}: {e}", k.project, k.shot, k.seq_type));
                Vec::new()
            }
        };
    let opts = PlanOptions {
        force: args.force,
        version_override: args.version,
        delivery_root: Some(delivery),
        colorspace: args.colorspace.clone(),
        movie_frames: args.movie_frames,
    };
    let numbered: Vec<(usize, iom::scanlist::Row)> = sheet
        .row_numbers
        .iter()
        .copied()
        .zip(sheet.rows.iter().cloned())
        .collect();
    let planned = plan::plan_numbered(&numbered, settings, &opts, &versions, &earlier_publish);
    if let Some(e) = tracker_error.into_inner() {
        eprintln!(
            "iom: {}: cannot read the existing versions from the tracker ({e}); \
             nothing was published: fix the tracker settings or wait for the site, then publish again",
            args.scanlist.display()
        );
        return Ok(None);
    }
    match planned {
        Ok(p) => {
            for w in &p.warnings {
                eprintln!("warning: {w}");
            }
            for n in &p.notes {
                eprintln!("iom: {n}");
            }
            Ok(Some(p))
        }
        // The rows' message says that nothing was published, and what to do.
        Err(e @ plan::PlanError::Rows(_)) => {
            eprintln!("iom: {}: {e}", args.scanlist.display());
            Ok(None)
        }
        Err(e) => {
            eprintln!(
                "iom: {}: nothing was published:\n{e}",
                args.scanlist.display()
            );
            Ok(None)
        }
    }
}

/// What an earlier publish of `graph` left in its work folder (see
/// [`plan::plan_numbered`]). A folder that cannot be read counts as none: the
/// plan then takes a new version, and the publish itself reports the folder.
fn earlier_publish(graph: &iom::task::Graph) -> Option<plan::EarlierPublish> {
    let work = WorkDir::open(&graph.work_dir).ok()?;
    let same = work.manifest().ok()? == *graph;
    let status = work.status().ok()?;
    let state = status.state;
    // A graph none of whose tasks was ever sent (a submit that died after
    // writing its work folder) is not running anywhere.
    let sent = status.tasks.iter().any(|t| t.state != TaskState::Waiting);
    Some(plan::EarlierPublish {
        state: if sent { state.as_str() } else { "never sent" }.to_string(),
        unfinished: state != GraphState::Succeeded,
        running: state == GraphState::Running && sent,
        same,
    })
}

pub fn run_publish(settings: &Settings, args: PublishArgs) -> anyhow::Result<u8> {
    let Some(plan) = plan_scanlist(settings, &args)? else {
        return Ok(exit::ITEM_ERRORS);
    };
    for s in &plan.skipped {
        eprintln!("skipped: {s}");
    }
    if plan.graphs.is_empty() {
        eprintln!(
            "iom: no checked rows to publish in {}",
            args.scanlist.display()
        );
        return Ok(exit::ITEM_ERRORS);
    }
    if args.dry_run {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan.graphs)?);
        } else {
            for g in &plan.graphs {
                print!("{}", g.tree(&|_| None));
            }
        }
        return Ok(exit::OK);
    }
    // Every work folder is checked before any is written: a refused publish
    // leaves no graph behind.
    for g in &plan.graphs {
        if plan.replaces.contains(&g.id) {
            let kept = WorkDir::supersede(&g.work_dir)?;
            eprintln!(
                "iom: the earlier plan of {} is kept in {}",
                g.id,
                kept.display()
            );
        } else {
            WorkDir::check_manifest(g)?;
        }
    }
    let mut works = Vec::new();
    for g in &plan.graphs {
        let w = WorkDir::create(g)?;
        // The same rows and version planned again: the same graph, whose failed
        // tasks this publish runs again (the user fixed the cause and published
        // again, as they would after any failure).
        let failed = w.failed_attempts()?.len();
        if failed > 0 {
            eprintln!(
                "iom: {} was published before and {failed} task(s) failed; running them again",
                g.id
            );
        }
        works.push(w);
    }
    let embedded_mode = args.embedded || settings.broker.url.is_empty();
    let rt = tokio_rt()?;
    let ctx = runtime_ctx(settings)?;
    if embedded_mode {
        let json = args.json;
        // A task can start before its `queued` event is told (the event follows
        // the dispatch mark); a `queued` line after `started` would read as a
        // second run, so it is left out.
        let begun = std::sync::Mutex::new(std::collections::HashSet::new());
        let on_event: Arc<dyn Fn(&TaskEvent) + Send + Sync> = Arc::new(move |ev: &TaskEvent| {
            let key = (ev.task_id.clone(), ev.attempt);
            let mut begun = begun.lock().unwrap_or_else(|p| p.into_inner());
            if ev.state == iom::events::TaskState::Queued {
                if begun.remove(&key) {
                    return;
                }
            } else if ev.state == iom::events::TaskState::Started {
                begun.insert(key);
            }
            drop(begun);
            if !json {
                eprintln!(
                    "{:<13} {} (attempt {}){}",
                    ev.state.as_str(),
                    ev.task_id,
                    ev.attempt,
                    ev.cause
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                );
            }
        });
        let opts = embedded_options(settings, on_event, true, args.embedded);
        let statuses = rt.block_on(async {
            let mut opts = opts;
            opts.stop = Some(interrupt(&ctx));
            embedded::run(works, ctx, opts).await
        })?;
        print_statuses(settings, &plan.graphs, &statuses, args.json)?;
        return Ok(exit_code(&statuses));
    }
    let cfg = BrokerConfig::from_settings(&settings.broker)?;
    rt.block_on(async {
        let broker = Broker::connect(&cfg).await?;
        broker.declare_topology().await?;
        let transport = BrokerTransport::open(&broker, ctx.worker.clone()).await?;
        // Nothing is sent while one of the graphs runs in another process.
        let resent = runtime::hand_to_farm(&works, &ctx, &transport).await?;
        for w in &works {
            let graph = w.manifest()?;
            let mut sent: Vec<_> = resent
                .iter()
                .filter(|t| graph.nodes.iter().any(|n| &n.id == *t))
                .cloned()
                .collect();
            sent.extend(runtime::submit(w, &ctx, &transport).await?);
            sent.extend(runtime::retry_failed(w, &ctx, &transport).await?);
            if !args.json {
                println!(
                    "submitted {} ({} task(s) queued); work folder {}",
                    w.manifest()?.id,
                    sent.len(),
                    w.path().display()
                );
            }
        }
        transport.close(Duration::from_secs(5)).await;
        broker.close().await;
        anyhow::Ok(())
    })?;
    if !args.wait {
        if args.json {
            let ids: Vec<_> = plan
                .graphs
                .iter()
                .map(|g| serde_json::json!({"graph_id": g.id, "work_dir": g.work_dir}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&ids)?);
        }
        return Ok(exit::OK);
    }
    let statuses = wait_all(&works, None)?;
    print_statuses(settings, &plan.graphs, &statuses, args.json)?;
    Ok(
        if statuses.iter().all(|s| s.state == GraphState::Succeeded) {
            exit::OK
        } else {
            exit::ITEM_ERRORS
        },
    )
}

/// The options of an in-process run from the settings.
fn embedded_options(
    settings: &Settings,
    on_event: Arc<dyn Fn(&TaskEvent) + Send + Sync>,
    retry_failed: bool,
    take_from_farm: bool,
) -> EmbeddedOptions {
    let mut opts = EmbeddedOptions::new(settings.worker.slots.into(), on_event);
    opts.retry_failed = retry_failed;
    opts.take_from_farm = take_from_farm;
    opts.grace = Duration::from_secs(settings.worker.shutdown_grace_secs);
    opts
}

/// Ctrl-C or SIGTERM during an in-process run: the first resolves the returned
/// future (no new task starts; the running ones finish), a second stops the
/// running steps now. Call it inside the runtime.
fn interrupt(ctx: &Arc<RuntimeCtx>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        worker::signal_shutdown().await;
        eprintln!(
            "iom: interrupted: no new tasks start; waiting for the running ones to finish \
             (Ctrl-C again to stop them now)"
        );
        let _ = tx.send(());
        worker::signal_shutdown().await;
        eprintln!("iom: stopping the running steps");
        cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Box::pin(async move {
        let _ = rx.await;
    })
}

/// 0 when every graph succeeded, 130 when one was interrupted, else 1.
fn exit_code(statuses: &[GraphStatus]) -> u8 {
    if statuses.iter().all(|s| s.state == GraphState::Succeeded) {
        exit::OK
    } else if statuses.iter().any(|s| s.state == GraphState::Interrupted) {
        exit::INTERRUPTED
    } else {
        exit::ITEM_ERRORS
    }
}

/// True when nothing more can happen without an operator: succeeded, failed
/// with nothing running or queued, or interrupted.
fn settled(s: &GraphStatus) -> bool {
    match s.state {
        GraphState::Succeeded | GraphState::Interrupted => true,
        GraphState::Failed => !s
            .tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Running { .. } | TaskState::Dispatched)),
        GraphState::Running => false,
    }
}

/// Called with every poll's statuses (`--follow` prints the tree).
type OnPoll<'a> = &'a mut dyn FnMut(&[GraphStatus]);

fn wait_all(works: &[WorkDir], mut each: Option<OnPoll<'_>>) -> anyhow::Result<Vec<GraphStatus>> {
    loop {
        let statuses: Vec<GraphStatus> = works
            .iter()
            .map(WorkDir::status)
            .collect::<Result<_, _>>()?;
        if let Some(f) = each.as_mut() {
            f(&statuses);
        }
        if statuses.iter().all(settled) {
            return Ok(statuses);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn print_statuses(
    settings: &Settings,
    graphs: &[Graph],
    statuses: &[GraphStatus],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(statuses)?);
        // The hints go to stderr: scripts read stdout, people the terminal.
        statuses.iter().for_each(|s| retry_hint(settings, s));
        return Ok(());
    }
    for (g, s) in graphs.iter().zip(statuses) {
        print!("{}", g.tree(&|id| s.label(id)));
        println!("=> {}\n", s.state.as_str());
        retry_hint(settings, s);
    }
    Ok(())
}

/// Tells (on stderr) how to run a graph's failed tasks again once their cause is
/// fixed: from the DLQ with a broker, from the work folder without.
fn retry_hint(settings: &Settings, s: &GraphStatus) {
    if s.state == GraphState::Interrupted {
        eprintln!(
            "iom: {} was interrupted before it finished; to continue it: iom resume {}",
            s.graph_id, s.graph_id
        );
    }
    let failed: Vec<&str> = s.failed().iter().map(|(id, _)| id.0.as_str()).collect();
    if failed.is_empty() {
        return;
    }
    if settings.broker.url.is_empty() {
        eprintln!(
            "iom: {} failed task(s) in {}; once the cause is fixed: iom resume {} --retry-failed",
            failed.len(),
            s.graph_id,
            s.graph_id
        );
    } else {
        for t in failed {
            eprintln!("iom: {t} failed; once the cause is fixed: iom dlq requeue --task {t} --reset-attempt");
        }
    }
}

/// Why the dead letter `d` needs no requeue, when it does not (see
/// [`iom::runtime::settled`]); `None` also when its body is not a task message.
fn dead_letter_settled(d: &iom::queue::DeadLetter) -> Option<iom::runtime::Settled> {
    iom::runtime::settled(&iom::task::TaskMessage::decode(&d.body).ok()?)
}

/// A publish named by work folder or graph id.
fn open_publish(settings: &Settings, publish: &str) -> anyhow::Result<WorkDir> {
    let p = Path::new(publish);
    if p.join("manifest.json").is_file() {
        return Ok(WorkDir::open(p)?);
    }
    if !iom::config::valid_component(publish) {
        anyhow::bail!("{publish} is neither a publish work folder nor a graph id");
    }
    let vars = plan::TemplateVars {
        graph: Some(publish.to_string()),
        ..plan::TemplateVars::default()
    };
    let rel = plan::render_template(&settings.publish.work_dir, &vars)
        .map_err(|e| anyhow::anyhow!("publish.work_dir: {e}"))?;
    let dir = settings.project.root.join(rel);
    WorkDir::open(&dir).with_context(|| {
        format!(
            "no publish {publish} under {}",
            settings.project.root.display()
        )
    })
}

/// One publish in `iom status`'s list.
#[derive(serde::Serialize)]
struct PublishLine {
    graph_id: String,
    state: GraphState,
    shot: String,
    version: u32,
    /// When the publish was submitted (its manifest written), RFC 3339 UTC.
    submitted: String,
    tasks: usize,
    succeeded: usize,
    failed: usize,
    running: usize,
    work_dir: PathBuf,
}

/// `iom status` without a publish: every publish of the project, newest first.
fn run_status_list(settings: &Settings, json: bool, limit: usize) -> anyhow::Result<u8> {
    let root = &settings.project.root;
    let mut works = iom::store::list_work_dirs(root, &settings.publish.work_dir)?;
    let all = works.len();
    if limit > 0 && all > limit {
        works.truncate(limit);
        if !json {
            eprintln!("iom: the newest {limit} of {all} publishes (--limit 0 lists all)");
        }
    }
    let mut lines = Vec::with_capacity(works.len());
    for (w, at) in &works {
        let (graph, status) = (w.manifest()?, w.status()?);
        let count = |f: fn(&TaskState) -> bool| status.tasks.iter().filter(|t| f(&t.state)).count();
        let submitted = at.duration_since(std::time::UNIX_EPOCH).map_or_else(
            |_| String::new(),
            |d| iom::queue::rfc3339_utc(d.as_millis() as i64),
        );
        lines.push(PublishLine {
            graph_id: graph.id.0.clone(),
            state: status.state,
            shot: graph.info.shot.clone(),
            version: graph.info.version,
            submitted,
            tasks: status.tasks.len(),
            succeeded: count(|s| matches!(s, TaskState::Succeeded { .. })),
            failed: status.failed().len(),
            running: count(|s| matches!(s, TaskState::Running { .. })),
            work_dir: w.path().to_path_buf(),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else if lines.is_empty() {
        println!("no publishes under {}", root.display());
    } else {
        for l in &lines {
            println!(
                "{:<40} {:<10} {:>3}/{} done{}{}  {} v{:03}  {}",
                l.graph_id,
                l.state.as_str(),
                l.succeeded,
                l.tasks,
                if l.failed > 0 {
                    format!(", {} failed", l.failed)
                } else {
                    String::new()
                },
                if l.running > 0 && l.state == GraphState::Interrupted {
                    format!(", {} stopped unfinished", l.running)
                } else if l.running > 0 {
                    format!(", {} running", l.running)
                } else {
                    String::new()
                },
                l.shot,
                l.version,
                l.submitted
            );
        }
    }
    Ok(
        if lines
            .iter()
            .any(|l| matches!(l.state, GraphState::Failed | GraphState::Interrupted))
        {
            exit::ITEM_ERRORS
        } else if lines.iter().any(|l| l.state == GraphState::Running) {
            exit::RUNNING
        } else {
            exit::OK
        },
    )
}

pub fn run_status(settings: &Settings, args: StatusArgs) -> anyhow::Result<u8> {
    let Some(publish) = args.publish.as_deref() else {
        return run_status_list(settings, args.json, args.limit);
    };
    let work = open_publish(settings, publish)?;
    let graph = work.manifest()?;
    let status = if args.follow {
        let mut last = String::new();
        let mut show = |ss: &[GraphStatus]| {
            let text = graph.tree(&|id| ss[0].label(id));
            if text != last && !args.json {
                println!("{text}");
                last = text;
            }
        };
        wait_all(std::slice::from_ref(&work), Some(&mut show))?.remove(0)
    } else {
        work.status()?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else if !args.follow {
        print!("{}", graph.tree(&|id| status.label(id)));
    }
    if !args.json {
        println!("=> {}", status.state.as_str());
        retry_hint(settings, &status);
    }
    Ok(match status.state {
        GraphState::Succeeded => exit::OK,
        GraphState::Failed | GraphState::Interrupted => exit::ITEM_ERRORS,
        GraphState::Running => exit::RUNNING,
    })
}

pub fn run_resume(settings: &Settings, args: ResumeArgs) -> anyhow::Result<u8> {
    let work = open_publish(settings, &args.publish)?;
    if work.status()?.state == GraphState::Succeeded {
        println!(
            "{} has succeeded: nothing to resume (publish the rows again for a new version)",
            work.manifest()?.id
        );
        return Ok(exit::OK);
    }
    let ready = work.ready_to_resume(args.include_unstarted)?;
    let rt = tokio_rt()?;
    let ctx = runtime_ctx(settings)?;
    if settings.broker.url.is_empty() || args.embedded {
        let opts = embedded_options(settings, Arc::new(|_| {}), args.retry_failed, args.embedded);
        let s = rt.block_on(async {
            let mut opts = opts;
            opts.stop = Some(interrupt(&ctx));
            embedded::run(vec![work.clone()], ctx, opts).await
        })?;
        let graph = work.manifest()?;
        print!("{}", graph.tree(&|id| s[0].label(id)));
        println!("resumed in-process: {}", s[0].state.as_str());
        retry_hint(settings, &s[0]);
        return Ok(exit_code(&s));
    }
    let cfg = BrokerConfig::from_settings(&settings.broker)?;
    let graph = work.manifest()?;
    let n = rt.block_on(async {
        let broker = Broker::connect(&cfg).await?;
        broker.declare_topology().await?;
        let transport = BrokerTransport::open(&broker, ctx.worker.clone()).await?;
        let works = [work.clone()];
        let mut sent = runtime::hand_to_farm(&works, &ctx, &transport).await?;
        let ready: Vec<_> = ready.into_iter().filter(|t| !sent.contains(t)).collect();
        sent.extend(runtime::dispatch_tasks(&work, ready, &ctx, &transport).await?);
        if args.retry_failed {
            sent.extend(runtime::retry_failed(&work, &ctx, &transport).await?);
        }
        transport.close(Duration::from_secs(5)).await;
        broker.close().await;
        anyhow::Ok(sent.len())
    })?;
    println!("re-published {n} task(s) of {}", graph.id);
    Ok(exit::OK)
}

pub fn run_dlq(settings: &Settings, cmd: DlqCommand) -> anyhow::Result<u8> {
    if settings.broker.url.is_empty() {
        eprintln!("iom: no broker configured (broker.url); in embedded mode failures stay in each publish's work folder: see `iom status`");
        return Ok(exit::USAGE);
    }
    let cfg = BrokerConfig::from_settings(&settings.broker)?;
    let rt = tokio_rt()?;
    rt.block_on(async {
        let broker = Broker::connect(&cfg).await?;
        broker.declare_topology().await?;
        let code = match cmd {
            DlqCommand::List { limit, json } => {
                let items = broker.dlq_list(limit).await?;
                if json {
                    let v: Vec<_> = items
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "index": d.index, "kind": d.kind, "reason": d.reason, "class": d.class,
                                "worker": d.worker, "failed_at": d.failed_at, "task_id": d.task_id,
                                "graph_id": d.graph_id, "x_death_reason": d.x_death_reason,
                                "settled": dead_letter_settled(d).map(|s| s.to_string()),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for d in &items {
                        println!(
                            "{:>4}  {:<9} {:<40} {}{}",
                            d.index,
                            d.kind.as_deref().unwrap_or("?"),
                            d.task_id.as_deref().unwrap_or("(not a task message)"),
                            d.reason,
                            dead_letter_settled(d)
                                .map(|s| format!("  [{s}; no requeue needed]"))
                                .unwrap_or_default()
                        );
                    }
                    println!("{} dead letter(s)", items.len());
                }
                exit::OK
            }
            DlqCommand::Show { index } => {
                let items = broker.dlq_list(index + 1).await?;
                match items.into_iter().find(|d| d.index == index) {
                    Some(d) => {
                        for (k, v) in &d.headers {
                            println!("{k}: {v}");
                        }
                        println!();
                        println!("{}", String::from_utf8_lossy(&d.body));
                        exit::OK
                    }
                    None => {
                        eprintln!("iom: no dead letter at index {index}");
                        exit::ITEM_ERRORS
                    }
                }
            }
            DlqCommand::Requeue {
                task,
                all,
                reset_attempt,
                json,
            } => {
                if task.is_none() && !all {
                    eprintln!("iom: say which: --task ID or --all");
                    return anyhow::Ok(exit::USAGE);
                }
                let mut left = Vec::new();
                let swept = broker
                    .dlq_sweep(|_, msg| match msg {
                        Some(m) if task.as_deref().is_none_or(|id| m.task_id.0 == id) => {
                            match iom::runtime::settled(m) {
                                Some(why) => {
                                    left.push((m.task_id.clone(), why));
                                    DlqAction::Keep
                                }
                                None => DlqAction::Requeue(Box::new(m.requeued(reset_attempt))),
                            }
                        }
                        _ => DlqAction::Keep,
                    })
                    .await?;
                for (task, why) in &left {
                    eprintln!("iom: left the dead letter of {task} in the DLQ: {why}; it needs no requeue (iom dlq drop --settled removes it)");
                }
                let sent: Vec<_> = swept
                    .into_iter()
                    .filter_map(|s| match s.action {
                        DlqAction::Requeue(m) => Some(*m),
                        _ => None,
                    })
                    .collect();
                if json {
                    let v: Vec<_> = sent
                        .iter()
                        .map(|m| {
                            serde_json::json!({
                                "task_id": m.task_id.0,
                                "graph_id": m.graph_id.0,
                                "attempt": m.attempt,
                                "retries_from": m.retries_from,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for m in &sent {
                        let round = if m.retries_from == m.attempt {
                            ", a fresh round of retries"
                        } else {
                            ""
                        };
                        println!("requeued {} as attempt {}{round}", m.task_id, m.attempt);
                    }
                    println!("requeued {} task(s)", sent.len());
                }
                match task {
                    Some(t) if sent.is_empty() && left.is_empty() => {
                        eprintln!("iom: no dead letter of task {t} (see iom dlq list)");
                        exit::ITEM_ERRORS
                    }
                    _ => exit::OK,
                }
            }
            DlqCommand::Drop {
                settled: settled_ones,
                task,
                unreadable,
                json,
            } => {
                if !settled_ones && task.is_none() && !unreadable {
                    eprintln!("iom: say which: --settled, --task ID or --unreadable");
                    return anyhow::Ok(exit::USAGE);
                }
                let swept = broker
                    .dlq_sweep(|_, msg| {
                        let why = match msg {
                            None if unreadable => Some("not a task message this build reads".to_string()),
                            None => None,
                            Some(m) if task.as_deref() == Some(m.task_id.0.as_str()) => {
                                Some("named by --task".to_string())
                            }
                            Some(m) if settled_ones => {
                                iom::runtime::settled(m).map(|s| s.to_string())
                            }
                            Some(_) => None,
                        };
                        why.map_or(DlqAction::Keep, DlqAction::Drop)
                    })
                    .await?;
                let dropped: Vec<_> = swept
                    .iter()
                    .filter_map(|s| match &s.action {
                        DlqAction::Drop(why) => Some((&s.letter, why)),
                        _ => None,
                    })
                    .collect();
                if json {
                    let v: Vec<_> = dropped
                        .iter()
                        .map(|(d, why)| {
                            serde_json::json!({
                                "kind": d.kind, "task_id": d.task_id, "graph_id": d.graph_id,
                                "reason": d.reason, "failed_at": d.failed_at, "dropped_because": why,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for (d, why) in &dropped {
                        println!(
                            "dropped {} ({}): {}  [{why}]",
                            d.task_id.as_deref().unwrap_or("(not a task message)"),
                            d.kind.as_deref().unwrap_or("?"),
                            d.reason
                        );
                    }
                    println!("dropped {} dead letter(s)", dropped.len());
                }
                match task {
                    Some(t) if dropped.is_empty() => {
                        eprintln!("iom: no dead letter of task {t} (see iom dlq list)");
                        exit::ITEM_ERRORS
                    }
                    _ => exit::OK,
                }
            }
        };
        broker.close().await;
        anyhow::Ok(code)
    })
}
