//! Which kgateway release's template semantics a transformation follows.
//!
//! kgateway changes its module between releases while the config JSON stays the same. One build
//! of this crate serves them all: the caller picks the release (the Envoy module from the Envoy
//! it runs in, the CLI from a flag) and compiles with it ([`crate::Options::release`]).
//!
//! | | v2.3 (Envoy 1.36, 1.37) | v2.4 (Envoy 1.38 and later) |
//! |---|---|---|
//! | a repeated header read by `header()`, `request_header()`, `%REQ()%`, `%RESP()%` | its last value | every value in order, joined with `", "` |
//!
//! `get_cookie` and `get_cookie_i` (new in v2.4) are available under both.

use std::fmt;

/// The kgateway release whose module a transformation behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KgatewayRelease {
    /// kgateway v2.2 and v2.3 (Envoy 1.36 and 1.37).
    #[default]
    V2_3,
    /// kgateway v2.4 (Envoy 1.38 and later).
    V2_4,
}

impl KgatewayRelease {
    /// Every release, oldest first.
    pub const ALL: [KgatewayRelease; 2] = [KgatewayRelease::V2_3, KgatewayRelease::V2_4];

    /// `v2.3` or `v2.4`.
    pub fn name(self) -> &'static str {
        match self {
            KgatewayRelease::V2_3 => "v2.3",
            KgatewayRelease::V2_4 => "v2.4",
        }
    }

    /// `v2.3`, `2.3`, `v2.4`, `2.4` (a patch may follow: `v2.4.1`); `v2.2` reads as v2.3, whose
    /// template semantics it shares.
    pub fn from_name(name: &str) -> Option<KgatewayRelease> {
        let name = name.trim();
        let version = name.strip_prefix('v').unwrap_or(name);
        let minor = version.strip_prefix("2.")?;
        let minor = minor.split('.').next()?;
        match minor {
            "2" | "3" => Some(KgatewayRelease::V2_3),
            "4" => Some(KgatewayRelease::V2_4),
            _ => None,
        }
    }

    /// Whether a header with several values reads as all of them joined with `", "` (v2.4)
    /// rather than as its last value (v2.3).
    pub fn joins_repeated_headers(self) -> bool {
        self == KgatewayRelease::V2_4
    }
}

impl fmt::Display for KgatewayRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::{MemoryMessage, MemoryStreamInfo};
    use crate::*;

    fn compile(json: &str, release: KgatewayRelease) -> Transformation {
        let options = Options {
            release,
            ..Options::default()
        };
        Transformation::from_json_with(json.as_bytes(), &options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `x-out` of the request after the request side of a policy setting it to `value`.
    fn request_value(
        value: &str,
        release: KgatewayRelease,
        headers: &[(&str, &str)],
    ) -> Vec<String> {
        let json = format!(
            r#"{{"request":{{"set":[{{"name":"x-out","value":{}}}]}}}}"#,
            serde_json::to_string(value).unwrap()
        );
        let t = compile(&json, release);
        let mut msg = MemoryMessage::new(headers, "");
        t.apply_request(
            &mut msg,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
        msg.values("x-out")
    }

    /// `x-out` of the response after the response side of a policy setting it to `value`.
    fn response_value(
        value: &str,
        release: KgatewayRelease,
        request: &[(&str, &str)],
        response: &[(&str, &str)],
    ) -> Vec<String> {
        let json = format!(
            r#"{{"response":{{"set":[{{"name":"x-out","value":{}}}]}}}}"#,
            serde_json::to_string(value).unwrap()
        );
        let t = compile(&json, release);
        let captured = t.capture_request(&MemoryMessage::new(request, ""));
        let mut msg = MemoryMessage::new(response, "");
        t.apply_response_captured(
            &mut msg,
            &captured,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
        msg.values("x-out")
    }

    const DUP: &[(&str, &str)] = &[("x-dup", "one"), ("X-Dup", "two"), ("x-other", "o")];

    #[test]
    fn release_names_parse_with_or_without_v_and_patch() {
        assert_eq!(
            KgatewayRelease::from_name("v2.4"),
            Some(KgatewayRelease::V2_4)
        );
        assert_eq!(
            KgatewayRelease::from_name("2.3.1"),
            Some(KgatewayRelease::V2_3)
        );
        assert_eq!(
            KgatewayRelease::from_name(" v2.2 "),
            Some(KgatewayRelease::V2_3)
        );
        for bad in ["", "v3", "2", "v2.5", "latest", "v2.40"] {
            assert_eq!(KgatewayRelease::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn v2_3_reads_the_last_value_of_a_repeated_header() {
        for value in [
            r#"{{ request_header("x-dup") }}"#,
            r#"{{ header("x-dup") }}"#,
            "%REQ(x-dup)%",
            r#"<{{ request_header("x-dup") ~ "" }}>"#,
        ] {
            let want = if value.starts_with('<') {
                "<two>"
            } else {
                "two"
            };
            assert_eq!(
                request_value(value, KgatewayRelease::V2_3, DUP),
                [want],
                "{value}"
            );
        }
    }

    #[test]
    fn v2_4_joins_every_value_of_a_repeated_header_in_order() {
        for value in [
            r#"{{ request_header("x-dup") }}"#,
            r#"{{ header("X-DUP") }}"#,
            "%REQ(x-dup)%",
            r#"{{ request_header("x-dup") ~ "" }}"#,
        ] {
            assert_eq!(
                request_value(value, KgatewayRelease::V2_4, DUP),
                ["one, two"],
                "{value}"
            );
        }
        assert_eq!(
            request_value(
                r#"{{ request_header("x-other") }}"#,
                KgatewayRelease::V2_4,
                DUP
            ),
            ["o"],
            "a single value is not joined"
        );
    }

    #[test]
    fn v2_4_joins_in_the_response_phase_and_in_prerendered_values() {
        let response = &[(":status", "200"), ("x-r", "a"), ("x-r", "b")];
        for (value, want) in [
            // Prerendered at the request: text and request operators only.
            ("%REQ(x-dup)%", "one, two"),
            (r#"{{ request_header("x-dup") }}"#, "one, two"),
            // Rendered at the response, from the request snapshot and the response itself.
            (
                r#"{{ request_header("x-dup") }}-{{ header("x-r") }}"#,
                "one, two-a, b",
            ),
            ("%RESP(x-r)%", "a, b"),
        ] {
            assert_eq!(
                response_value(value, KgatewayRelease::V2_4, DUP, response),
                [want],
                "{value}"
            );
        }
        assert_eq!(
            response_value(
                r#"{{ request_header("x-dup") }}-{{ header("x-r") }}"#,
                KgatewayRelease::V2_3,
                DUP,
                response
            ),
            ["two-b"]
        );
    }

    #[test]
    fn a_computed_header_name_joins_too() {
        let value = r#"{% set n = "x-" ~ "dup" %}{{ request_header(n) }}"#;
        assert_eq!(
            request_value(value, KgatewayRelease::V2_4, DUP),
            ["one, two"]
        );
        assert_eq!(request_value(value, KgatewayRelease::V2_3, DUP), ["two"]);
    }

    const COOKIES: &[(&str, &str)] = &[
        ("cookie", "session=abc123; User=johndoe"),
        ("Cookie", "foo=bar; test=123"),
    ];

    #[test]
    fn get_cookie_reads_every_cookie_header_with_case_sensitive_names() {
        for release in KgatewayRelease::ALL {
            for (name, want) in [
                ("session", vec!["abc123"]),
                ("User", vec!["johndoe"]),
                ("foo", vec!["bar"]),
                ("test", vec!["123"]),
                ("SESSION", vec![]),
                ("user", vec![]),
                ("missing", vec![]),
            ] {
                let value = format!(r#"{{{{ get_cookie("{name}") }}}}"#);
                assert_eq!(
                    request_value(&value, release, COOKIES),
                    want,
                    "{release} {name}"
                );
            }
        }
    }

    #[test]
    fn get_cookie_i_compares_names_lowercased() {
        let value = r#"{{ get_cookie_i("SESSION") }}"#;
        assert_eq!(
            request_value(
                value,
                KgatewayRelease::V2_4,
                &[("cookie", "Session=abc123")]
            ),
            ["abc123"]
        );
        assert_eq!(
            request_value(
                r#"{{ get_cookie_i("user") }}"#,
                KgatewayRelease::V2_3,
                COOKIES
            ),
            ["johndoe"]
        );
    }

    #[test]
    fn cookie_pairs_are_trimmed_split_at_the_first_equals_and_the_first_wins() {
        let headers = &[
            ("cookie", " tok = a=b=c ;flag; =nameless; k=1"),
            ("cookie", "k=2; empty=; tok=later"),
        ];
        for (name, want) in [
            ("tok", vec!["a=b=c"]),
            ("k", vec!["1"]),
            ("flag", vec![]),
            ("", vec![]),
            ("empty", vec![]),
        ] {
            let value = format!(r#"{{{{ get_cookie("{name}") }}}}"#);
            assert_eq!(
                request_value(&value, KgatewayRelease::V2_4, headers),
                want,
                "{name}"
            );
        }
        assert_eq!(
            request_value(
                r#"{{ get_cookie_i("a") }}"#,
                KgatewayRelease::V2_4,
                &[("cookie", "a=1; A=2")]
            ),
            ["1"],
            "several spellings in one header: the first"
        );
    }

    #[test]
    fn response_values_read_the_request_cookies() {
        let value = r#"{{ get_cookie("session") }}"#;
        assert_eq!(
            response_value(value, KgatewayRelease::V2_4, COOKIES, &[(":status", "200")]),
            ["abc123"]
        );
    }

    #[test]
    fn a_json_key_or_context_read_only_through_a_slice_is_parsed() {
        let body = r#"{"text":"a-b_c.d","nested":{"s":"hello"},"model":"gpt-4o","flags":[1,2,3]}"#;
        for (value, want) in [
            (r#"{{ (context()["flags"])[::2] }}"#, "[1, 3]"),
            ("{{ text[2:] }}", "b_c.d"),
            ("{{ text[-3:] }}", "c.d"),
            ("{{ (text[2:]) | upper }}", "B_C.D"),
            ("{{ nested.s[1:] }}", "ello"),
            ("<{{ model[:3] }}>", "<gpt>"),
        ] {
            let json = format!(
                r#"{{"request":{{"body":{{"parseAs":"AsJson"}},"set":[{{"name":"x-out","value":{}}}]}}}}"#,
                serde_json::to_string(value).unwrap()
            );
            let t = compile(&json, KgatewayRelease::V2_4);
            let mut msg = MemoryMessage::new(&[("content-type", "application/json")], body);
            t.apply_request(
                &mut msg,
                BodyMode::Buffered,
                &mut MemoryStreamInfo::default(),
            )
            .unwrap();
            assert_eq!(msg.values("x-out"), [want], "{value}");
        }
    }
}
