//! `/status/N`: reply with status N, described the way Go's `http.StatusText` does.

use crate::server::{Incoming, Reply};

/// `/status/418` or `/status/200,500` (one of the list, at random). Codes outside 100-599 or not
/// numbers are a 400, as in httpbun.
pub fn reply(req: &Incoming, codes: &str) -> Reply {
    if codes.len() > 99 {
        return Reply::text(400, "Too many status codes");
    }
    let mut parsed = Vec::new();
    for part in codes.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => parsed.push(code),
            _ => return Reply::text(400, format!("Invalid status code: {part}")),
        }
    }
    let status = match parsed.len() {
        0 => return Reply::text(400, format!("Invalid status code: {codes}")),
        1 => parsed[0],
        n => parsed[fastrand::usize(..n)],
    };
    // Go sends a 1xx as an interim response and then the body under an implicit 200; a lone 1xx
    // head would leave the client waiting for a final response.
    let sent = if status < 200 { 200 } else { status };
    if req
        .header_last("Accept")
        .is_some_and(|a| a.starts_with("text/plain"))
    {
        let mut reply = Reply::text(sent, text(status));
        // Go sniffs plain text but leaves the type off an empty body.
        if reply.body.is_empty() {
            reply.headers.clear();
        }
        return reply;
    }
    Reply::json(
        sent,
        &serde_json::json!({ "code": status, "description": text(status) }),
    )
}

/// Go's `net/http.StatusText`: empty for codes it does not know.
pub fn text(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}
