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
        Exit codes: 0 ok, 1 some items failed (listed), 2 bad usage or settings, 3 could not run."
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
    /// Generate a small sample delivery in DIR and scan it (the README's first command).
    Demo(DemoArgs),
    /// Make one colour-managed thumbnail from a frame (EXR, DPX, JPEG).
    Thumbnail(ThumbnailArgs),
    /// Generate a sample delivery (for trying iom out and for benchmarks).
    Sample(SampleArgs),
    /// Print the effective settings (defaults + file + environment) as YAML.
    Config,
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
        "scanned {}: {} sequences, {} movies, {} frames, {} missing frames in {} sequences, {} bad frames, {} rows, {} errors, {} warnings",
        report.delivery.display(),
        s.sequences,
        s.movies,
        s.frames,
        s.missing_frames,
        s.sequences_with_gaps,
        s.bad_frames,
        s.rows,
        s.errors,
        s.warnings
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
            delivery,
            output: None,
            json: args.json,
            colorspace: None,
            jobs: None,
            no_scanlist: false,
            no_thumbnails: false,
        },
    )?;
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
