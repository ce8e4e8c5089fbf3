//! `rustformations`: validate, render and explain TrafficPolicy transformations with the
//! module's own code (`transformations` and the module's config loader), before they reach a
//! gateway.

#![forbid(unsafe_code)]

/// `print!` that never panics: a reader that went away (`rustformations render ... | head`)
/// ends the program quietly with status 141, as a process killed by SIGPIPE would.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::output_failed(e);
        }
    }};
}

/// `println!` that never panics (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

mod explain;
mod http;
mod input;
mod policy;
mod render;
mod validate;
mod yaml;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "rustformations",
    version,
    about = "Validate, render and explain kgateway TrafficPolicy transformations with the rustformations module's own code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Compile every TrafficPolicy transformation/acl and every rust_module filter config found
    /// in FILEs (YAML or JSON; a directory: its .yaml/.yml/.json files; `-`: standard input).
    /// Exit 0 only when everything loads.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run one request (and the upstream's response) through a policy and print what the
    /// upstream receives and what the client gets, changed headers marked (+ added, ~ changed,
    /// - removed).
    Render {
        /// A TrafficPolicy file (or Envoy config, or raw transformation JSON).
        policy: String,
        /// An HTTP/1.1 request file, or the request path (or http:// URL) with -X/-H/-d.
        request: Option<String>,
        /// Pick the TrafficPolicy with this metadata.name.
        #[arg(long)]
        name: Option<String>,
        #[arg(short = 'X', long = "request-method", value_name = "METHOD")]
        method: Option<String>,
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Request body, or @file (sent byte for byte, as curl's --data-binary).
        #[arg(
            short = 'd',
            long = "data",
            alias = "data-binary",
            value_name = "BODY|@FILE"
        )]
        data: Option<String>,
        /// The upstream's response as an HTTP/1.1 message file.
        #[arg(long, conflicts_with_all = ["status", "response_headers", "response_body"])]
        response: Option<String>,
        /// The upstream's status.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// An upstream response header.
        #[arg(long = "response-header", value_name = "NAME: VALUE")]
        response_headers: Vec<String>,
        /// The upstream's response body, or @file.
        #[arg(long = "response-body", value_name = "BODY|@FILE")]
        response_body: Option<String>,
        /// NAME=VALUE for env(NAME) (otherwise this process's environment, as the module reads Envoy's).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// [SOURCE/]NAMESPACE:KEY=VALUE for metadata(NAMESPACE, KEY[, SOURCE]); SOURCE is dynamic
        /// (the default), route, cluster or host.
        #[arg(long = "metadata", value_name = "[SOURCE/]NAMESPACE:KEY=VALUE")]
        metadata: Vec<String>,
        /// %DOWNSTREAM_REMOTE_ADDRESS%.
        #[arg(long, default_value = "127.0.0.1:40000")]
        remote_address: SocketAddr,
        /// %START_TIME% (UTC, e.g. 2026-11-26T13:46:26.123Z); default: now.
        #[arg(long)]
        start_time: Option<String>,
        /// %PROTOCOL%.
        #[arg(long, default_value = "HTTP/1.1")]
        protocol: String,
        /// The marker header ("Name: value", or off); default: RUSTFORMATION_MARKER_HEADER or
        /// X-Custom-Transformed: true, as the module.
        #[arg(long)]
        marker: Option<String>,
        /// The kgateway release whose semantics to follow (v2.3 or v2.4: how a repeated header
        /// reads); default: RUSTFORMATION_KGATEWAY_VERSION, else v2.3.
        #[arg(long, value_name = "RELEASE")]
        kgateway: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show the plan the module compiled for one policy: which side buffers and why, which
    /// values are literals, operators or templates, what they read.
    Explain {
        policy: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// Standard output failed: quietly when the reader went away, else with a line on stderr.
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("rustformations: error: cannot write to standard output: {e}");
    std::process::exit(2);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rustformations: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn print_json(v: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `BODY` or `@file`.
fn data(arg: &str) -> Result<Vec<u8>, String> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(input::read(path)?.bytes),
        None => Ok(arg.as_bytes().to_vec()),
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Validate {
            files,
            format,
            deny_warnings,
        } => {
            let report = validate::run(&files)?;
            match format {
                Format::Text => validate::print_text(&report),
                Format::Json => print_json(&validate::to_json(&report)),
            }
            let failed =
                !report.errors.is_empty() || (deny_warnings && !report.warnings.is_empty());
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain {
            policy,
            name,
            format,
        } => {
            let policy = render::load_policy(&policy, name.as_deref())?;
            match format {
                Format::Text => out!("{}", explain::print_text(&policy)),
                Format::Json => print_json(&explain::to_json(&policy)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            policy,
            request,
            name,
            method,
            headers,
            data: body,
            response,
            status,
            response_headers,
            response_body,
            env,
            metadata,
            remote_address,
            start_time,
            protocol,
            marker,
            kgateway,
            format,
        } => {
            // env(): the values given, then this process's environment. Set before compiling,
            // since the lookup is fixed when the policy is compiled.
            let mut given = Vec::new();
            for e in &env {
                let (k, v) = e
                    .split_once('=')
                    .ok_or_else(|| format!("--env wants NAME=VALUE, got {e:?}"))?;
                given.push((k.to_owned(), v.to_owned()));
            }
            let setting =
                kgateway.or_else(|| std::env::var(rustformations::release::RELEASE_ENV).ok());
            let release = match setting.as_deref() {
                Some(s) => rustformations::release::choose(None, Some(s))?.0,
                None => transformations::KgatewayRelease::default(),
            };
            let marker = match marker {
                Some(m) => transformations::marker::parse(&m)?,
                None => transformations::marker::from_env()?,
            };
            let start_time = match start_time {
                Some(t) => render::parse_time(&t)?,
                None => SystemTime::now(),
            };
            // The module's filter reads these from Envoy's process; set before anything loads.
            let options = render::compile_options(given, release);
            render::set_outside_envoy_options(options.clone(), marker, start_time)?;
            let policy = render::load_policy_with(&policy, name.as_deref(), &options)?;
            let curl_like = method.is_some() || !headers.is_empty() || body.is_some();
            let request = match request.as_deref() {
                None => {
                    return Err(
                        "render needs a request: a request file, or a path with -X/-H/-d".into(),
                    );
                }
                Some(r) if !curl_like && std::path::Path::new(r).is_file() => {
                    let source = input::read(r)?;
                    http::parse_request(&source.bytes, &source.name)?
                }
                Some(r)
                    if r.starts_with('/')
                        || r.starts_with("http://")
                        || r.starts_with("https://") =>
                {
                    let mut hs = Vec::new();
                    for h in &headers {
                        hs.push(http::parse_header(h).map_err(|e| format!("-H: {e}"))?);
                    }
                    let body = body.as_deref().map(data).transpose()?.unwrap_or_default();
                    let method = method
                        .unwrap_or_else(|| if body.is_empty() { "GET" } else { "POST" }.to_owned());
                    let (authority, path) = http::split_target(r);
                    let authority = authority.or_else(|| {
                        hs.iter()
                            .rev()
                            .find(|(n, _)| n == "host")
                            .map(|(_, v)| v.clone())
                    });
                    http::build_request(&method, &path, authority.as_deref(), hs, body)?
                }
                Some(r) => {
                    return Err(format!(
                        "{r}: no such request file (a request path starts with '/')"
                    ));
                }
            };
            let response = match response {
                Some(file) => {
                    let source = input::read(&file)?;
                    http::parse_response(&source.bytes, &source.name)?
                }
                None => {
                    let mut hs = Vec::new();
                    for h in &response_headers {
                        hs.push(
                            http::parse_header(h).map_err(|e| format!("--response-header: {e}"))?,
                        );
                    }
                    let body = response_body
                        .as_deref()
                        .map(data)
                        .transpose()?
                        .unwrap_or_default();
                    http::build_response(http::parse_status(&status.to_string())?, hs, body)?
                }
            };
            let metadata = metadata
                .iter()
                .map(|m| render::parse_metadata(m))
                .collect::<Result<Vec<_>, _>>()?;
            let stream = render::Stream {
                metadata,
                protocol,
                remote_address,
            };
            let rendered = render::run(&policy, request, response, &stream)?;
            match format {
                Format::Text => out!("{}", render::print_text(&policy, &rendered)),
                Format::Json => print_json(&render::to_json(&policy, &rendered)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
