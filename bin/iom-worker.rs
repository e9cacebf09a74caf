//! `iom-worker`: a stateless farm worker. Consumes step queues from RabbitMQ and
//! runs the publish steps. Glue only; the work is in `iom::worker`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use iom::config::Settings;
use iom::queue::BrokerConfig;
use iom::runtime::RuntimeCtx;
use iom::task::StepKind;
use iom::worker::{self, WorkerOptions, WorkerStats};

#[derive(Parser)]
#[command(
    name = "iom-worker",
    version,
    about = "Run iom publish steps from RabbitMQ on this farm node",
    long_about = "Run iom publish steps from RabbitMQ on this farm node.\n\n\
        The worker is stateless: it consumes the step queues it is told to (like Tractor \
        service keys), runs each task, records the result in the publish's work folder and \
        acknowledges the message only after that. SIGTERM stops it gracefully.\n\n\
        Exit codes: 0 stopped cleanly, 2 bad usage or settings, 3 the broker stayed unreachable."
)]
struct Cli {
    /// Settings file (YAML) layered over the defaults.
    #[arg(long, env = "IOM_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Step queues to consume, comma-separated (default: worker.queues).
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    queues: Option<Vec<StepKind>>,
    /// Concurrent tasks (default: worker.slots).
    #[arg(long, value_name = "N")]
    slots: Option<u16>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iom-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut telemetry = match iom::telemetry::init(
        &settings.logging.level,
        cli.log_json || settings.logging.format == "json",
        &settings.telemetry,
        "iom-worker",
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iom-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.broker.url.is_empty() {
        eprintln!("iom-worker: broker.url is empty; set it in the settings file or IOM__BROKER__URL (workers need a broker)");
        return ExitCode::from(2);
    }
    let cfg = match BrokerConfig::from_settings(&settings.broker) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iom-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let tracker = match iom::tracker::open_tracker(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iom-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = WorkerOptions {
        queues: cli.queues.unwrap_or_else(|| settings.worker.queues.clone()),
        slots: cli.slots.unwrap_or(settings.worker.slots),
        reconnect_for: Duration::from_secs(600),
        grace: Duration::from_secs(settings.worker.shutdown_grace_secs),
    };
    let ctx = Arc::new(RuntimeCtx {
        settings: Arc::new(settings),
        worker: worker::identity(),
        tracker,
        cancel: worker::new_cancel_flag(),
    });
    let stats = Arc::new(WorkerStats::default());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iom-worker: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let metrics = (
        ctx.settings.metrics.listen.clone(),
        ctx.settings.metrics.queue_depth_every_secs,
    );
    let result = rt.block_on(async {
        if !metrics.0.is_empty() {
            if let Err(e) = iom::metrics::serve(&metrics.0).await {
                eprintln!("iom-worker: {e}");
                return Err(None);
            }
        }
        if metrics.1 > 0 {
            tokio::spawn(iom::metrics::poll_queue_depths(
                cfg.clone(),
                Duration::from_secs(metrics.1),
            ));
        }
        worker::run(cfg, ctx, opts, stats.clone(), worker::signal_shutdown())
            .await
            .map_err(Some)
    });
    // A step thread that ignored its cancellation must not hold the process
    // (dropping the runtime would wait for it): its delivery is back on the queue.
    rt.shutdown_timeout(Duration::from_secs(2));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(None) => ExitCode::from(2),
        Err(Some(e)) => {
            eprintln!("iom-worker: {e}");
            ExitCode::from(3)
        }
    }
}
