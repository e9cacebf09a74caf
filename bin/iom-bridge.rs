//! `iom-bridge`: mirrors publish graphs into Tractor (`run`), and the proxy
//! command every mirrored Tractor task runs on a blade (`await`). Glue only; the
//! work is in `iom::bridge`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use iom::bridge::{self, AwaitOutcome, BridgeError};
use iom::config::Settings;

#[derive(Parser)]
#[command(
    name = "iom-bridge",
    version,
    about = "Mirror iom publish graphs as Tractor jobs",
    long_about = "Mirror iom publish graphs as Tractor jobs.\n\n\
        `run` consumes the task events (its own durable queue on the events exchange) and \
        spools one Tractor job per publish graph, once: graph id -> jid is recorded in \
        tractor.state_file. The engine is TRACTOR_ENGINE or tractor.engine.\n\n\
        `await` is the command of every mirrored Tractor task (service key \
        tractor.proxy_service): it follows the real step in the publish work folder, prints its \
        log lines and TR_PROGRESS, and exits with the step's status. Run again after a failure \
        (a retry in Tractor), it requeues the step on RabbitMQ and waits for the new attempt.\n\n\
        Exit codes: 0 step succeeded (await) or clean stop (run), 1 step failed, \
        2 bad usage, settings, graph or task, 3 infrastructure error (work folder, broker)."
)]
struct Cli {
    /// Settings file (YAML) layered over the defaults.
    #[arg(long, global = true, env = "IOM_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bridge daemon until SIGTERM or Ctrl-C.
    Run,
    /// Proxy command of a mirrored task: wait for the real step's outcome.
    Await {
        /// The publish graph id.
        #[arg(long)]
        graph: String,
        /// The iom task id.
        #[arg(long)]
        task: String,
    },
}

fn code(e: &BridgeError) -> u8 {
    match e {
        BridgeError::Usage(_) => 2,
        _ => 3,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iom-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let service = match cli.command {
        Cmd::Run => "iom-bridge",
        Cmd::Await { .. } => "iom-bridge-await",
    };
    let mut telemetry = match iom::telemetry::init(
        &settings.logging.level,
        cli.log_json || settings.logging.format == "json",
        &settings.telemetry,
        service,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iom-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iom-bridge: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match cli.command {
        Cmd::Run => {
            if settings.broker.url.is_empty() {
                eprintln!(
                    "iom-bridge: broker.url is empty; the bridge follows the broker's task events"
                );
                return ExitCode::from(2);
            }
            let settings = Arc::new(settings);
            let r = rt.block_on(async {
                serve_metrics(&settings).await?;
                tokio::select! {
                    r = bridge::run(settings) => r,
                    _ = iom::worker::signal_shutdown() => Ok(()),
                }
            });
            telemetry.shutdown();
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("iom-bridge: {e}");
                    ExitCode::from(code(&e))
                }
            }
        }
        Cmd::Await { graph, task } => {
            let mut out = std::io::stdout();
            match rt.block_on(bridge::await_task(&settings, &graph, &task, &mut out)) {
                Ok(AwaitOutcome::Succeeded) => ExitCode::SUCCESS,
                Ok(AwaitOutcome::Failed(_)) => ExitCode::from(1),
                Err(e) => {
                    println!("iom: error: {e}");
                    eprintln!("iom-bridge: {e}");
                    ExitCode::from(code(&e))
                }
            }
        }
    }
}

/// Serves `/metrics` on `metrics.listen` (when set) and reads the depth and
/// consumers of every iom queue into it every `metrics.queue_depth_every_secs`
/// (15 s when 0: the bridge is the cluster's depth reader).
async fn serve_metrics(settings: &Settings) -> Result<(), BridgeError> {
    if settings.metrics.listen.is_empty() {
        return Ok(());
    }
    iom::metrics::serve(&settings.metrics.listen)
        .await
        .map_err(|e| BridgeError::Usage(e.to_string()))?;
    let cfg = iom::queue::BrokerConfig::from_settings(&settings.broker)?;
    let every = match settings.metrics.queue_depth_every_secs {
        0 => 15,
        n => n,
    };
    tokio::spawn(iom::metrics::poll_queue_depths(
        cfg,
        std::time::Duration::from_secs(every),
    ));
    Ok(())
}
