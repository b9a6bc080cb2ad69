//! The `signal-server` binary: parses the command line and runs the server.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use signal_server::cli::{Cli, Command, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.log_format);
    let threads = match &cli.command {
        Some(Command::Serve(args)) => args.threads,
        Some(Command::Bridge(_)) => 0,
        None => cli.serve.threads,
    };
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Serve(args)) => runtime.block_on(serve(args)),
        Some(Command::Bridge(args)) => runtime.block_on(bridge(args)),
        None => runtime.block_on(serve(cli.serve)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    // Handlers go in before the socket is bound, so a signal that arrives as
    // soon as the server listens still means "shut down cleanly".
    let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    let port = std::env::var("PORT").ok();
    let addr = args.bind_addr(port.as_deref())?;
    signal_server::server::raise_open_files_limit();
    let listener = signal_server::server::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let result = match args.redis_options() {
        Some(redis) => {
            signal_server::server::run_redis(listener, args.config(), redis, shutdown).await
        }
        None => signal_server::server::run(listener, args.config(), shutdown).await,
    };
    result.map_err(|e| format!("server failed: {e}"))
}

async fn bridge(args: signal_server::bridge::BridgeArgs) -> Result<(), String> {
    let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    signal_server::bridge::run(args, shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed log pipe must not take the server down: without this,
        // tracing-subscriber reports the failed write with `eprintln!`, which
        // panics when stderr itself is the broken pipe.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// Completes on SIGINT or SIGTERM (Heroku sends SIGTERM, then SIGKILL 30 s
/// later). The handlers are installed when this is called.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    })
}
