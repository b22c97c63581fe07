//! The `weir` binary: parses the command line, sets up logging, and runs the
//! chosen sub-command. The broker is the `weir` library; the tools (the
//! load tool, the admin HTTP client, user management) live in [`cli`], in
//! this binary only.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command};
use weir::config::{Config, LogFormat, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Health(args)) => cli::admin::health(&args),
        Some(Command::Dlq(args)) => cli::admin::dlq(&args),
        Some(Command::Backup(args)) => cli::admin::backup(&args),
        Some(Command::Restore(args)) => cli::admin::restore(&args),
        Some(Command::Bench(args)) => cli::bench::main(args),
        Some(Command::Users(args)) => cli::users::main(&args),
        Some(Command::Topics(args)) => cli::topics::main(args),
        Some(Command::Groups(args)) => cli::groups::main(args),
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "weir", &mut script);
            match std::io::stdout().write_all(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir completions: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(args: &ServeArgs) {
    // The consensus engine logs every failed message to an absent peer as
    // an error; the quorum's own logs say when a peer goes and comes back.
    // Name `openraft` in the filter to see the engine's.
    let level = if args.log_level.contains("openraft") {
        args.log_level.clone()
    } else {
        format!("{},openraft=off", args.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    let format = args
        .log_format
        .unwrap_or(if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // The levels may change while the broker runs (BROKER_LOGGER).
    fn swap<L, S>(h: tracing_subscriber::reload::Handle<L, S>) -> weir::log_levels::Reload
    where
        L: From<tracing_subscriber::EnvFilter> + Send + Sync + 'static,
        S: Send + Sync + 'static,
    {
        Box::new(move |d: &str| {
            let f = tracing_subscriber::EnvFilter::try_new(d).map_err(|e| e.to_string())?;
            h.reload(f).map_err(|e| e.to_string())
        })
    }
    match format {
        LogFormat::Json => {
            let b = builder.json().flatten_event(true).with_filter_reloading();
            let h = b.reload_handle();
            b.init();
            weir::log_levels::install(&level, swap(h));
        }
        LogFormat::Text => {
            let b = builder.with_filter_reloading();
            let h = b.reload_handle();
            b.init();
            weir::log_levels::install(&level, swap(h));
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(weir::run(config, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "weir failed");
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once
/// (the log is safe to stop at any point).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("weir: second signal, exiting now");
        std::process::exit(130);
    });
}
