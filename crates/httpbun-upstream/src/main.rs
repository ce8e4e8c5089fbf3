//! A small httpbun-compatible HTTP/1.1 server.
//!
//! The lab runs the real `sharat87/httpbun` image in Kubernetes; this binary answers the same way on
//! the endpoints the lab uses, so local demos, end-to-end tests (behind a real Envoy) and
//! benchmarks have an upstream without that image.

mod echo;
mod llm;
mod routes;
mod server;
mod status;
mod urlencoded;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: httpbun-upstream [--bind ADDR]

  --bind ADDR   address to listen on (e.g. 127.0.0.1:0 for a free port);
                default: $HTTPBUN_BIND, else 0.0.0.0:80

environment:
  HTTPBUN_BIND              listen address when --bind is not given
  HTTPBUN_STREAM_DELAY_MS   pause between streamed LLM events (default 50)

Once listening, prints `listening on <ip>:<port>` on stdout.";

/// Settings shared by every request.
pub struct Config {
    /// Pause between streamed chat events; tests set it to 0 through the environment.
    pub stream_delay: Duration,
    /// Value of `X-Powered-By`, which httpbun sets to `httpbun/<commit>`.
    pub powered_by: String,
}

fn main() -> ExitCode {
    let bind = match bind_address(std::env::args().skip(1), std::env::var("HTTPBUN_BIND").ok()) {
        Ok(Some(bind)) => bind,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("httpbun-upstream: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stream_delay = match std::env::var("HTTPBUN_STREAM_DELAY_MS") {
        Ok(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                eprintln!(
                    "httpbun-upstream: HTTPBUN_STREAM_DELAY_MS must be milliseconds, got {ms:?}"
                );
                return ExitCode::from(2);
            }
        },
        Err(_) => Duration::from_millis(50),
    };
    let config = Arc::new(Config {
        stream_delay,
        powered_by: format!("httpbun/rustformations-{}", env!("CARGO_PKG_VERSION")),
    });

    let listener = match TcpListener::bind(&bind) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("httpbun-upstream: cannot listen on {bind}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(err) => {
            eprintln!("httpbun-upstream: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("httpbun-upstream: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| runtime.block_on(async { tokio::net::TcpListener::from_std(listener) }))
    {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("httpbun-upstream: {err}");
            return ExitCode::FAILURE;
        }
    };

    if let Err(err) = exit_on_termination_signals() {
        eprintln!("httpbun-upstream: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }

    // Harnesses bind port 0 and read the chosen port from this line, so it must not sit in a buffer.
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on {local}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);

    runtime.block_on(accept_forever(listener, config))
}

/// Serves every connection on its own task. Accept errors (a client that reset before it was
/// accepted, running out of file descriptors) are transient: the listener keeps going.
async fn accept_forever(listener: tokio::net::TcpListener, config: Arc<Config>) -> ExitCode {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("httpbun-upstream: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A response head and a large body leave in two writes; with Nagle's algorithm the second
        // would wait for the client's delayed ACK (~40 ms a response).
        if let Err(err) = stream.set_nodelay(true) {
            eprintln!("httpbun-upstream: cannot set TCP_NODELAY: {err}");
        }
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                server::serve(request, peer.ip(), Arc::clone(&config))
            });
            // Go's server writes canonical header names and keeps idle connections open; a
            // connection error only ends that connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .header_read_timeout(None)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Picks the listen address: `--bind` wins over `HTTPBUN_BIND`, then httpbun's default `:80`.
/// `Ok(None)` means help was asked for.
fn bind_address(
    mut args: impl Iterator<Item = String>,
    env_bind: Option<String>,
) -> Result<Option<String>, String> {
    let mut bind = None;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if arg == "--bind" || arg == "-bind" {
            bind = Some(args.next().ok_or("--bind needs an address")?);
        } else if let Some(value) = arg.strip_prefix("--bind=").or(arg.strip_prefix("-bind=")) {
            bind = Some(value.to_string());
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    let bind = bind
        .or(env_bind.filter(|b| !b.trim().is_empty()))
        .unwrap_or_else(|| "0.0.0.0:80".to_string());
    // Go accepts ":80" for "every interface"; std's resolver does not.
    Ok(Some(match bind.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => bind,
    }))
}

/// SIGTERM and SIGINT end the process with status 0: there is no state to save, and harnesses
/// that stop the server should not see it as a crash.
fn exit_on_termination_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::process::exit(0);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bind_address;

    fn args(list: &[&str]) -> std::vec::IntoIter<String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn bind_precedence() {
        assert_eq!(
            bind_address(args(&[]), None).unwrap().unwrap(),
            "0.0.0.0:80"
        );
        assert_eq!(
            bind_address(args(&[]), Some("127.0.0.1:9".into()))
                .unwrap()
                .unwrap(),
            "127.0.0.1:9"
        );
        assert_eq!(
            bind_address(args(&["--bind", "127.0.0.1:0"]), Some("x".into()))
                .unwrap()
                .unwrap(),
            "127.0.0.1:0"
        );
        assert_eq!(
            bind_address(args(&["--bind=:3090"]), None)
                .unwrap()
                .unwrap(),
            "0.0.0.0:3090"
        );
        assert!(bind_address(args(&["--bind"]), None).is_err());
        assert!(bind_address(args(&["--nope"]), None).is_err());
        assert!(bind_address(args(&["--help"]), None).unwrap().is_none());
    }
}
