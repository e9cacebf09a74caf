//! `iom`: the IO coordinator's command line. Glue only: it parses arguments,
//! loads settings, draws progress and maps outcomes to exit codes; the work is in
//! the `iom` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use iom::config::Settings;
use iom::scan::{self, Progress, ScanOptions, ScanReport};

#[path = "iom/jobs.rs"]
mod jobs;
#[path = "iom/publish.rs"]
mod publish;

/// Exit codes a script can rely on.
mod exit {
    /// Everything worked.
    pub const OK: u8 = 0;
    /// The command ran, but some items failed (they are listed).
    pub const ITEM_ERRORS: u8 = 1;
    /// Bad usage or settings (clap also uses 2).
    pub const USAGE: u8 = 2;
    /// The command could not run (delivery missing, scanlist not writable …).
    pub const FATAL: u8 = 3;
    /// `iom status`: the publish is still running.
    pub const RUNNING: u8 = 4;
    /// An in-process publish was stopped (Ctrl-C, SIGTERM) before it finished;
    /// `iom resume` continues it.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "iom",
    version,
    about = "Scan VFX deliveries into scanlists and publish plates",
    long_about = "Scan VFX deliveries into scanlists and publish plates.\n\n\
        Settings are layered: built-in defaults, then the file given by --config \
        (or IOM_CONFIG, ./config/local.yml, /etc/iom/settings.yml), then IOM__SECTION__KEY \
        environment variables.\n\n\
        Exit codes: 0 ok, 1 some items failed (listed), 2 bad usage or settings, 3 could not run, \
        4 still running (status), 130 interrupted (Ctrl-C: `iom resume <id>` continues it)."
)]
struct Cli {
    /// Settings file (YAML) layered over the defaults.
    #[arg(long, global = true, env = "IOM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log as JSON lines on stderr.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan a delivery folder: find sequences and movies, read metadata, report gaps,
    /// make thumbnails and write scanlist_NN.xlsx.
    Scan(ScanArgs),
    /// Generate a small sample delivery in DIR, scan it, name its shots and publish it
    /// in-process (the README's first command).
    Demo(DemoArgs),
    /// Publish the checked rows of a scanlist: one task graph per group, run by the
    /// farm workers (broker configured) or in-process (no broker: the embedded default).
    ///
    /// In-process, Ctrl-C starts no new task and lets the running ones finish (a second
    /// Ctrl-C stops them); `iom resume <graph-id>` continues. Publishing the same rows
    /// again after a failure that came before any file of the version was published
    /// plans the same graph and runs its failed tasks again.
    Publish(PublishArgs),
    /// Show a publish's task tree with states and times, or list the project's
    /// publishes.
    Status(StatusArgs),
    /// Continue a publish: re-publish whatever a crash left ready but undispatched
    /// (in-process: also what an interrupted run had queued or started); with
    /// --retry-failed, run the failed tasks again too.
    Resume(ResumeArgs),
    /// Inspect and replay the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Monitor a publish's mirrored Tractor job (status, wait, failed tasks).
    ///
    /// Exit codes: 0 job done, 1 job failed (or deleted), 2 bad usage or the publish
    /// is not mirrored / no such job, 3 engine unreachable, 4 still running or paused,
    /// 5 `wait --timeout` expired.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Make one colour-managed thumbnail from a frame (EXR, DPX, JPEG).
    Thumbnail(ThumbnailArgs),
    /// Generate a sample delivery (for trying iom out and for benchmarks).
    Sample(SampleArgs),
    /// Print the effective settings (defaults + file + environment) as YAML.
    Config,
}

#[derive(Args)]
struct PublishArgs {
    /// The scanlist (scanlist_NN.xlsx, or a legacy .xls-named one).
    scanlist: PathBuf,
    /// Print the graphs (a tree each) and publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON output (graphs for --dry-run, statuses otherwise).
    #[arg(long)]
    json: bool,
    /// Publish into a version that already exists (logged).
    #[arg(long)]
    force: bool,
    /// Publish every group as this version instead of the row's or the next free one.
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Scan colour space for the media steps (default: project's, else colour.default_colorspace).
    #[arg(long, value_name = "NAME")]
    colorspace: Option<String>,
    /// Publish movie plates (MOV/MXF) as frames, the original's "MOV to DPX":
    /// "dpx 10bit", "dpx 12bit", "exr 16bit", "exr 32bit", or "off" to keep the
    /// movies (default: publish.movie_frames / publish.project_movie_frames).
    /// `editor` rows always keep the movie.
    #[arg(long, value_name = "FORMAT", value_parser = parse_movie_frames)]
    movie_frames: Option<iom::config::MovieFrames>,
    /// Broker mode: wait until every graph finishes (exit 1 if any failed).
    #[arg(long)]
    wait: bool,
    /// Run in-process even when a broker is configured, or when these rows'
    /// unfinished publish was submitted to the farm (make sure the farm does not
    /// run it any more: its tasks would run twice).
    #[arg(long)]
    embedded: bool,
}

fn parse_movie_frames(s: &str) -> Result<iom::config::MovieFrames, String> {
    iom::task::FrameFormat::parse_setting(s).map(iom::config::MovieFrames)
}

#[derive(Args)]
struct StatusArgs {
    /// A publish: its graph id or its work folder. Without it, the project's
    /// publishes are listed, newest first, one line each (exit 1 if one listed
    /// failed, 4 if one is still running).
    publish: Option<String>,
    /// With no publish: list at most this many (0: all).
    #[arg(long, default_value_t = 50, conflicts_with = "publish")]
    limit: usize,
    /// Keep watching until the publish finishes.
    #[arg(long, requires = "publish")]
    follow: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResumeArgs {
    /// A publish: its graph id or its work folder.
    publish: String,
    /// Also re-publish tasks that were dispatched but never started (use when the
    /// queue itself was lost).
    #[arg(long)]
    include_unstarted: bool,
    /// Also run each failed task again, once its cause is fixed: as the attempt
    /// after the one that failed, with a fresh round of retries; its children follow.
    /// (With a broker its dead letter stays in the DLQ, marked as history in `iom dlq
    /// list`; `iom dlq requeue --task ID --reset-attempt` does the same from there and
    /// removes it.)
    #[arg(long)]
    retry_failed: bool,
    /// Run it in this process even when a broker is configured, or when it was
    /// submitted to the farm (make sure the farm does not run it any more: its
    /// tasks would run twice).
    #[arg(long)]
    embedded: bool,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (oldest first) without removing them. A dead letter whose
    /// task a later attempt has run since (resume --retry-failed, a publish again,
    /// a Tractor retry) says so: it needs no requeue.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        /// Its index in `iom dlq list`.
        index: usize,
    },
    /// Put dead letters back on their work queue, each as its next attempt (so a
    /// late report about the dead attempt cannot overrule the new one). A dead
    /// letter whose task has been taken care of since (see `list`) is left alone:
    /// running it again could only run the task twice.
    Requeue {
        /// Only this task id.
        #[arg(long, conflicts_with = "all")]
        task: Option<String>,
        /// Every valid task message in the DLQ.
        #[arg(long)]
        all: bool,
        /// Give each task a fresh round of `worker.max_attempts` tries with
        /// retries (without it, a task that gave up gets one more try).
        #[arg(long)]
        reset_attempt: bool,
        /// JSON output: the messages sent (task, graph, attempt, round).
        #[arg(long)]
        json: bool,
    },
    /// Remove dead letters for good: those that need no requeue, a task's, or
    /// those that are not task messages. Give at least one; a dead letter
    /// matching any of them is removed.
    Drop {
        /// Those whose task has been taken care of since: it completed or ran
        /// again, or its publish was planned again or removed (`list` marks them).
        #[arg(long)]
        settled: bool,
        /// This task's dead letters, whatever their state.
        #[arg(long)]
        task: Option<String>,
        /// Bodies that are not task messages this build reads (poison messages,
        /// other schema versions), once you have looked at them with `show`.
        #[arg(long)]
        unreadable: bool,
        /// JSON output: the dead letters removed.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ThumbnailArgs {
    /// The frame to read.
    frame: PathBuf,
    /// The JPEG to write.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Scan colour space of the frame (a name from colour.spaces).
    #[arg(long, value_name = "NAME")]
    colorspace: Option<String>,
}

#[derive(Args)]
struct SampleArgs {
    /// Folder to write the delivery into.
    dir: PathBuf,
    /// Number of EXR sequences (benchmark delivery); without it, the demo delivery.
    #[arg(long)]
    sequences: Option<usize>,
    /// Frames per sequence.
    #[arg(long, default_value_t = 48)]
    frames: i64,
    /// Frame width.
    #[arg(long, default_value_t = 2048)]
    width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 1152)]
    height: u32,
    /// Number of ProRes movies with EDLs.
    #[arg(long, default_value_t = 3)]
    movies: usize,
}

#[derive(Args)]
struct ScanArgs {
    /// The delivery folder.
    delivery: PathBuf,
    /// Write the scanlist here instead of the next scanlist_NN.xlsx in the delivery.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print the report as JSON on stdout (no progress bar).
    #[arg(long)]
    json: bool,
    /// Scan colour space (a name from colour.spaces; default: the project's, else colour.default_colorspace).
    #[arg(long, value_name = "NAME")]
    colorspace: Option<String>,
    /// Parallel workers (default: scan.jobs, 0 = one per core).
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// Do not write a scanlist (report only).
    #[arg(long)]
    no_scanlist: bool,
    /// Do not make thumbnails.
    #[arg(long)]
    no_thumbnails: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder to work in; created if missing.
    #[arg(default_value = "iom-demo")]
    dir: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // `iom status | head` ends quietly, as a Unix tool does, instead of panicking
    // on the closed pipe (Rust ignores SIGPIPE by default). Sockets are not
    // affected: the standard library sends with MSG_NOSIGNAL.
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iom: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    iom::logging::init(
        &settings.logging.level,
        cli.log_json || settings.logging.format == "json",
    );
    let result = match cli.command {
        Command::Scan(args) => run_scan(&settings, args),
        Command::Demo(args) => run_demo(settings, args),
        Command::Publish(args) => publish::run_publish(&settings, args),
        Command::Status(args) => publish::run_status(&settings, args),
        Command::Resume(args) => publish::run_resume(&settings, args),
        Command::Dlq(cmd) => publish::run_dlq(&settings, cmd),
        Command::Jobs(cmd) => jobs::run_jobs(&settings, cmd),
        Command::Thumbnail(args) => run_thumbnail(&settings, args),
        Command::Sample(args) => run_sample(args),
        Command::Config => serde_yaml::to_string(&settings)
            .map(|s| {
                print!("{s}");
                exit::OK
            })
            .context("cannot print settings"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("iom: {e:#}");
            ExitCode::from(exit::FATAL)
        }
    }
}

/// An indicatif bar behind the library's progress trait.
struct Bar(ProgressBar);

impl Bar {
    fn new(visible: bool) -> Self {
        let pb = if visible {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar(pb)
    }
}

impl Progress for Bar {
    fn start(&self, items: u64) {
        self.0.set_length(items);
    }

    fn item_done(&self, label: &str) {
        self.0.set_message(label.to_string());
        self.0.inc(1);
    }
}

fn run_scan(settings: &Settings, args: ScanArgs) -> anyhow::Result<u8> {
    let opts = ScanOptions {
        delivery: args.delivery.clone(),
        colorspace: args.colorspace,
        jobs: args.jobs,
        output: args.output,
        write_scanlist: !args.no_scanlist,
        thumbnails: !args.no_thumbnails,
    };
    let bar = Bar::new(!args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let report = match scan::scan(settings, &opts, &bar) {
        Ok(r) => r,
        Err(e) => {
            bar.0.finish_and_clear();
            eprintln!("iom: {e}");
            return Ok(exit::FATAL);
        }
    };
    bar.0.finish_and_clear();
    print_report(&report, args.json)?;
    if report.rows.is_empty() {
        eprintln!(
            "iom: no image sequence (EXR, DPX, JPEG) or movie (MOV, MXF) found in {}; \
             no scanlist written: check that this is the delivery folder",
            report.delivery.display()
        );
        return Ok(exit::ITEM_ERRORS);
    }
    Ok(if report.summary.errors > 0 {
        exit::ITEM_ERRORS
    } else {
        exit::OK
    })
}

fn print_report(report: &ScanReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for r in &report.rows {
        println!(
            "{:>2} {:<40} {:>5} {:>11} {:>6}-{:<6} {:<11} {}",
            if r.check { "o" } else { "" },
            format!("{}/{}", short(&r.scan_path), r.scan_name),
            r.ext,
            r.resolution,
            r.start_frame.map(|v| v.to_string()).unwrap_or_default(),
            r.end_frame.map(|v| v.to_string()).unwrap_or_default(),
            r.timecode_in,
            r.clip_name,
        );
    }
    for i in &report.issues {
        let tag = match i.severity {
            iom::scanlist::Severity::Error => "error",
            iom::scanlist::Severity::Warning => "warning",
        };
        eprintln!("{tag}: {}: {}", i.path, i.message);
    }
    let s = &report.summary;
    println!(
        "scanned {}: {}, {}, {}, {} in {}, {}, {}, {}, {}",
        report.delivery.display(),
        counted(s.sequences, "sequence"),
        counted(s.movies, "movie"),
        counted(s.frames, "frame"),
        counted(s.missing_frames, "missing frame"),
        counted(s.sequences_with_gaps, "sequence"),
        counted(s.bad_frames, "bad frame"),
        counted(s.rows, "row"),
        counted(s.errors, "error"),
        counted(s.warnings, "warning"),
    );
    if let Some(p) = &report.scanlist {
        println!("scanlist: {}", p.display());
    }
    Ok(())
}

fn short(p: &str) -> String {
    let parts: Vec<&str> = p.rsplitn(3, '/').collect();
    if parts.len() == 3 {
        format!("…/{}/{}", parts[1], parts[0])
    } else {
        p.to_string()
    }
}

fn run_demo(mut settings: Settings, args: DemoArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create demo folder {}", args.dir.display()))?;
    let dir = std::path::absolute(&args.dir)?;
    settings.project.root = dir.join("show").join(&settings.project.name);
    eprintln!(
        "iom demo: generating a sample delivery under {}",
        dir.display()
    );
    let delivery = iom::sample::demo_delivery(&settings.project.root)
        .with_context(|| format!("cannot generate the sample delivery in {}", dir.display()))?;
    eprintln!("iom demo: scanning {}", delivery.display());
    let code = run_scan(
        &settings,
        ScanArgs {
            delivery: delivery.clone(),
            output: None,
            json: args.json,
            colorspace: None,
            jobs: None,
            no_scanlist: false,
            no_thumbnails: false,
        },
    )?;
    if code == exit::FATAL {
        return Ok(code);
    }
    // The coordinator's edit: shot names on the checked rows, saved as the next scanlist.
    let first =
        iom::scanlist::write::latest_scanlist(&delivery).context("the scan wrote no scanlist")?;
    let mut sheet = iom::scanlist::read::read(&first, &settings.scanlist, Some(&delivery))?;
    let n = iom::sample::demo_edit(&mut sheet.rows);
    let edited = iom::scanlist::write::next_scanlist_path(&delivery)?;
    iom::scanlist::write::write(&edited, &sheet.rows, &[], &settings.scanlist)?;
    eprintln!(
        "iom demo: named {n} shots in {} (as the IO coordinator would)",
        edited.display()
    );
    settings.broker.url.clear();
    eprintln!(
        "iom demo: publishing in-process into {}",
        settings.project.root.display()
    );
    let code = publish::run_publish(
        &settings,
        PublishArgs {
            scanlist: edited,
            dry_run: false,
            json: args.json,
            force: false,
            version: None,
            colorspace: None,
            movie_frames: None,
            wait: false,
            embedded: true,
        },
    )?;
    if !args.json {
        println!("published:");
        let seq_root = settings.project.root.join("seq");
        let mut per_dir: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
        for e in walkdir::WalkDir::new(&seq_root)
            .sort_by_file_name()
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
        {
            let dir = e.path().parent().map(PathBuf::from).unwrap_or_default();
            per_dir
                .entry(dir)
                .or_default()
                .push(e.file_name().to_string_lossy().into_owned());
        }
        for (dir, names) in per_dir {
            let shown = match names.as_slice() {
                [one] => one.clone(),
                [first, .., last] => format!("{first} … {last}"),
                [] => String::new(),
            };
            println!("  {}/  {} file(s): {shown}", dir.display(), names.len());
        }
        println!(
            "local tracker: {}",
            settings
                .project
                .root
                .join(&settings.tracker.local_dir)
                .display()
        );
        // The binary by its path: after `deploy/demo.sh` it is not on PATH.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("iom"));
        println!(
            "look again: IOM__PROJECT__ROOT={} {} status   (one publish: add its graph id)",
            settings.project.root.display(),
            exe.display()
        );
    }
    Ok(code)
}

fn run_thumbnail(settings: &Settings, args: ThumbnailArgs) -> anyhow::Result<u8> {
    let pipeline = iom::colour::Pipeline::from_settings(
        &settings.colour,
        args.colorspace.as_deref(),
        Some(settings.project.name.as_str()),
    )?;
    match iom::thumbnail::make_for_frame(&args.frame, &args.output, &pipeline, &settings.thumbnail)
    {
        Ok((w, h)) => {
            println!("{} ({w}x{h})", args.output.display());
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("iom: {e}");
            Ok(exit::ITEM_ERRORS)
        }
    }
}

fn run_sample(args: SampleArgs) -> anyhow::Result<u8> {
    let dir = match args.sequences {
        Some(n) => iom::sample::bench_delivery(
            &args.dir,
            n,
            args.frames,
            args.width,
            args.height,
            args.movies,
        )?,
        None => iom::sample::demo_delivery(&args.dir)?,
    };
    println!("{}", dir.display());
    Ok(exit::OK)
}

/// `1 movie`, `2 movies`.
fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
