//! The sub-commands that talk to a running broker's admin HTTP API
//! (`weir health`, `weir backup`, `weir dlq`) and `weir restore`.

use std::process::ExitCode;
use std::time::Duration;

use super::args::{BackupArgs, DlqAction, DlqArgs, HealthArgs, RestoreArgs};

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

pub fn backup(args: &BackupArgs) -> ExitCode {
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

pub fn restore(args: &RestoreArgs) -> ExitCode {
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

pub fn dlq(args: &DlqArgs) -> ExitCode {
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

pub fn health(args: &HealthArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    match http_call(&args.http_listen, "GET", "/api/health", None, None, timeout) {
        Ok((status, body)) => {
            println!("{body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("weir health: {e}");
            ExitCode::FAILURE
        }
    }
}
