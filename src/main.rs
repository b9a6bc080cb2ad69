//! The `signal-server` binary: parses the command line and runs the server.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use signal_server::cli::{Cli, Command, LogFormat, ServeArgs};
use signal_server::turn;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.log_format);
    let threads = match &cli.command {
        Some(Command::Serve(args)) => args.threads,
        Some(Command::Bridge(_)) => 0,
        Some(Command::Token(_)) => 1,
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
    if std::env::var_os(DEBUG_PANIC_VAR).is_some() {
        return runtime.block_on(debug_panic());
    }
    let result = match cli.command {
        Some(Command::Serve(args)) => runtime.block_on(serve(args)),
        Some(Command::Bridge(args)) => runtime.block_on(bridge(args)),
        Some(Command::Token(args)) => signal_server::auth::tool::run(args),
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

/// Operator-only diagnostic: with this variable set, the binary panics in a
/// task on its runtime (where a bug in a connection's task would) instead of
/// starting, so that what a release build prints for a panic can be checked
/// (`RUST_BACKTRACE=1`; scripts/release-check.sh does). Only the process's
/// environment reaches it, never a peer.
const DEBUG_PANIC_VAR: &str = "SIGNAL_SERVER_DEBUG_PANIC";

async fn debug_panic() -> ExitCode {
    let task = tokio::spawn(async {
        let reason = std::env::var(DEBUG_PANIC_VAR).unwrap_or_default();
        panic!("deliberate panic ({DEBUG_PANIC_VAR}={reason:?})");
    });
    match task.await {
        // The exit code of a panicking Rust program.
        Err(err) if err.is_panic() => ExitCode::from(101),
        _ => ExitCode::FAILURE,
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    // Handlers go in before the socket is bound, so a signal that arrives as
    // soon as the server listens still means "shut down cleanly".
    let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    let auth = args.auth.config()?;
    if let signal_server::auth::AuthConfig::Token(keys) = &auth {
        tracing::info!("auth: token mode, {}", keys.describe());
    }
    let port = std::env::var("PORT").ok();
    let addr = args.bind_addr(port.as_deref())?;
    signal_server::server::raise_open_files_limit();
    let listener = signal_server::server::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // The TURN relay (if any) stops with the server: one token for both.
    let stop = CancellationToken::new();
    let mut config = args.config();
    config.auth = auth;
    // Certificates load (or ACME starts) before anything listens: a bad
    // file is an error at start, not at the first handshake.
    config.tls = args.tls.start(stop.clone())?;
    let turn = turn::start_from_args(
        &args.turn,
        &config.ice_servers,
        config.tls.as_ref(),
        stop.clone(),
    )
    .await?;
    // Every `init` (and `ice_servers`) reply carries credentials of its own.
    config.turn = turn.ice.clone();
    let stopping = stop.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    let result = match args.redis_options() {
        Some(redis) => signal_server::server::run_redis(listener, config, redis, shutdown).await,
        None => signal_server::server::run(listener, config, shutdown).await,
    };
    stop.cancel();
    if let Some(relay) = turn.relay {
        relay.closed().await;
    }
    result.map_err(|e| format!("server failed: {e}"))
}

async fn bridge(args: signal_server::bridge::BridgeArgs) -> Result<(), String> {
    let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    signal_server::bridge::run(args, shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The TURN protocol crates log and open spans per packet, and log every
    // 401 challenge (the normal start of an allocation) as an error: off
    // unless RUST_LOG names them. The relay's own spans and metrics say
    // what matters.
    let named = std::env::var("RUST_LOG").unwrap_or_default();
    for krate in [
        "turn_server_proto",
        "turn_types",
        "stun_proto",
        "stun_types",
    ] {
        if !named.contains(krate) {
            if let Ok(d) = format!("{krate}=off").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
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
