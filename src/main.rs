//! The `weir` binary: parses the command line, sets up logging, and runs the
//! chosen sub-command.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use weir::config::{
    BackupArgs, Cli, Command, Config, DlqAction, DlqArgs, HealthArgs, LogFormat, RestoreArgs,
    ServeArgs,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Health(args)) => health(&args),
        Some(Command::Dlq(args)) => dlq(&args),
        Some(Command::Backup(args)) => backup(&args),
        Some(Command::Restore(args)) => restore(&args),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Users(args)) => users(&args),
    }
}

fn users(args: &weir::config::UsersArgs) -> ExitCode {
    use weir::config::UsersAction;
    use weir::security::users::{validate_username, UserStore};
    let store = match UserStore::open(&args.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir users: {}: {e}", args.data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let result = match &args.action {
        UsersAction::Add {
            name,
            password,
            iterations,
        } => {
            if let Err(e) = validate_username(name) {
                eprintln!("weir users: {e}");
                return ExitCode::FAILURE;
            }
            let password = match password {
                Some(p) => p.clone(),
                None => {
                    let mut line = String::new();
                    if let Err(e) = std::io::stdin().read_line(&mut line) {
                        eprintln!("weir users: cannot read the password: {e}");
                        return ExitCode::FAILURE;
                    }
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                eprintln!("weir users: the password is empty");
                return ExitCode::FAILURE;
            }
            store
                .add_user(name, &password, *iterations)
                .map(|()| println!("user {name} saved"))
        }
        UsersAction::Delete { name } => match store.delete(name, None) {
            Ok(true) => {
                println!("user {name} deleted");
                Ok(())
            }
            Ok(false) => {
                eprintln!("weir users: no user {name}");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        UsersAction::List => {
            for (name, mechs) in store.list() {
                let m: Vec<String> = mechs
                    .iter()
                    .map(|(m, i)| format!("{}(iterations={i})", m.name()))
                    .collect();
                println!("{name}\t{}", m.join(","));
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir users: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: weir::config::BenchArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(weir::bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &ServeArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
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

/// One HTTP/1.1 exchange with the admin API: (status, body).
fn http_call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let target = addr.replace("0.0.0.0", "127.0.0.1");
    let sock = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {target}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot connect to {sock}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {sock}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write failed: {e}"))?;
    let mut resp = String::new();
    let _ = stream.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((status, body))
}

fn backup(args: &BackupArgs) -> ExitCode {
    let to = match std::path::absolute(&args.to) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weir backup: bad --to: {e}");
            return ExitCode::from(2);
        }
    };
    let body = serde_json::json!({ "to": to }).to_string();
    match http_call(
        &args.http_listen,
        "POST",
        "/api/backup",
        args.admin_token.as_deref(),
        Some(&body),
        Duration::from_secs(3600),
    ) {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("weir backup: HTTP {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("weir backup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore(args: &RestoreArgs) -> ExitCode {
    match weir::backup::restore(&args.from, &args.data_dir) {
        Ok(m) => {
            println!(
                "restored {} partitions ({} bytes) into {}",
                m.partitions.len(),
                m.bytes,
                args.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dlq(args: &DlqArgs) -> ExitCode {
    let timeout = Duration::from_secs(30);
    let token = args.admin_token.as_deref();
    let result = match &args.action {
        DlqAction::List {
            topic,
            partition,
            offset,
            limit,
        } => {
            let mut path = format!("/api/dlq/{topic}?offset={offset}&limit={limit}");
            if let Some(p) = partition {
                path.push_str(&format!("&partition={p}"));
            }
            http_call(&args.http_listen, "GET", &path, token, None, timeout)
        }
        DlqAction::Redrive {
            topic,
            partition,
            from_offset,
            to_offset,
            to,
        } => {
            if to != "retry" && to != "topic" {
                eprintln!("weir dlq: --to must be retry or topic");
                return ExitCode::from(2);
            }
            let mut body = serde_json::json!({ "to": to });
            if let Some(p) = partition {
                body["partition"] = (*p).into();
            }
            if let Some(f) = from_offset {
                body["from_offset"] = (*f).into();
            }
            if let Some(t) = to_offset {
                body["to_offset"] = (*t).into();
            }
            http_call(
                &args.http_listen,
                "POST",
                &format!("/api/dlq/{topic}/redrive"),
                token,
                Some(&body.to_string()),
                timeout,
            )
        }
    };
    match result {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("weir dlq: HTTP {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("weir dlq: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(args: &HealthArgs) -> ExitCode {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let target = args.http_listen.replace("0.0.0.0", "127.0.0.1");
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let Some(addr) = target.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("weir health: cannot resolve {target}");
        return ExitCode::FAILURE;
    };
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir health: cannot connect to {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let req = format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    let mut resp = String::new();
    let _ = stream.read_to_string(&mut resp);
    let healthy = resp.starts_with("HTTP/1.1 200");
    println!("{}", resp.split("\r\n\r\n").nth(1).unwrap_or("").trim());
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
