//! The Envoy command-operator parser on arbitrary text, and evaluation of what it accepts
//! against hostile header values: no panic, `:N` truncation respected, output stays UTF-8.
#![no_main]

use std::borrow::Cow;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use transformations::operators::{OperatorSource, Segment, parse};

struct Source<'a>(&'a str);

impl OperatorSource for Source<'_> {
    fn request_header(&self, _name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.0))
    }
    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        name.len()
            .is_multiple_of(2)
            .then_some(Cow::Borrowed(self.0))
    }
    fn protocol(&self) -> Option<&str> {
        Some("HTTP/1.1")
    }
    fn start_time(&self) -> Option<&str> {
        Some("2026-11-26T13:46:26.123Z")
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        "[2001:db8::1]:443".parse().ok()
    }
}

fuzz_target!(|input: (&str, &str)| {
    let (text, header_value) = input;
    let Ok(segments) = parse(text) else { return };
    let source = Source(header_value);
    for segment in &segments {
        if let Segment::Op(op) = segment {
            let mut out = String::from("prefix");
            op.eval(&source, &mut out);
            if let Some(max) = op.max_len {
                assert!(
                    out.len() <= "prefix".len().saturating_add(max),
                    "truncation exceeded :{max}"
                );
            }
            assert!(out.starts_with("prefix"));
        }
    }
});
