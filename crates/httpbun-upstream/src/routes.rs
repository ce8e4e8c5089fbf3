//! Path routing, following httpbun's route table for the endpoints we serve.

use std::time::Duration;

use crate::server::{Incoming, Outcome, Reply};

pub fn route(req: &Incoming) -> Outcome {
    // httpbun ignores one trailing slash on every route: `/get/` is `/get`.
    let path = match req.path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => req.path.as_str(),
    };

    let reply = match path {
        "/get" | "/post" | "/put" | "/patch" | "/delete" => method_checked(req, &path[1..]),
        "/headers" => Reply::json(
            200,
            &serde_json::json!({ "headers": crate::echo::headers_object(req) }),
        ),
        "/llm/chat/completions" | "/llm/v1/chat/completions" => {
            return crate::llm::chat_completions(req);
        }
        _ if is_anything(path) => crate::echo::info(req),
        _ => {
            if let Some(codes) = path.strip_prefix("/status/").filter(|c| !c.contains('/')) {
                crate::status::reply(req, codes)
            } else if let Some(delay) = path.strip_prefix("/delay/").filter(|d| !d.contains('/')) {
                delay_reply(delay)
            } else {
                Reply::text(404, "404 page not found\n")
            }
        }
    };
    Outcome::Reply(reply)
}

/// `/get`, `/post`, ...: the echo, but only for that method (and OPTIONS, for CORS preflights).
fn method_checked(req: &Incoming, name: &str) -> Reply {
    let allowed = name.to_ascii_uppercase();
    if req.method != allowed && req.method != "OPTIONS" {
        let allow = format!("{allowed}, OPTIONS");
        return Reply::empty(405)
            .with_header("Allow", allow.clone())
            .with_header("Access-Control-Allow-Methods", allow);
    }
    crate::echo::info(req)
}

/// httpbun's pattern `/any(thing)?\b.*`: `/any`, `/anything`, `/anything/x`, `/any-x`, but not
/// `/anythingx`.
fn is_anything(path: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    ["/anything", "/any"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| !rest.starts_with(word))
    })
}

/// `/delay/N`: waits N seconds (fractions allowed, 0 to 300), then says `OK`.
fn delay_reply(raw: &str) -> Reply {
    let seconds = match raw.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => seconds,
        _ => return Reply::text(400, format!("Invalid delay: {raw:?} is not a number")),
    };
    if !(0.0..=300.0).contains(&seconds) {
        return Reply::text(400, "Delay can't be greater than 300 or less than 0");
    }
    std::thread::sleep(Duration::from_secs_f64(seconds));
    Reply::text(200, "OK")
}

#[cfg(test)]
mod tests {
    use super::is_anything;

    #[test]
    fn anything_pattern() {
        for yes in [
            "/any",
            "/anything",
            "/anything/a/b",
            "/any/x",
            "/any-thing",
            "/anything.json",
        ] {
            assert!(is_anything(yes), "{yes}");
        }
        for no in ["/anythingx", "/anyx", "/an", "/x/anything"] {
            assert!(!is_anything(no), "{no}");
        }
    }
}
