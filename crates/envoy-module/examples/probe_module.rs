//! A module that exercises every SDK operation, driven by request headers, for checking the SDK
//! against real Envoy binaries (see `ABI-NOTES.md`). Filter name `probe`; its config string is
//! echoed in `x-probe-config`. `x-panic: <hook>` panics in that hook.

use std::sync::Arc;

use envoy_module::{
    Attribute, BodyStatus, CounterId, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind,
    HeadersStatus, HttpFilter, HttpFilterConfig, PerRouteConfig, TrailersStatus, log_info,
};

envoy_module::declare_module!(Module {
    new_filter_config,
    new_per_route_config
});

fn new_filter_config(
    envoy: &mut dyn EnvoyFilterConfig,
    name: &str,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    match name {
        "probe" => {}
        "reject" => {
            return Err(format!(
                "config {:?} is not acceptable",
                String::from_utf8_lossy(config)
            ));
        }
        "panic_config" => panic!("config panic requested"),
        other => return Err(format!("unknown filter name '{other}'")),
    }
    let requests = envoy.define_counter("probe_requests")?;
    log_info!("probe: config loaded: {}", String::from_utf8_lossy(config));
    Ok(Box::new(ProbeConfig {
        config: String::from_utf8_lossy(config).into_owned(),
        requests,
    }))
}

fn new_per_route_config(name: &str, config: &[u8]) -> Result<PerRouteConfig, String> {
    if config == b"reject" {
        return Err("per-route config rejected on request".to_string());
    }
    Ok(Arc::new(format!(
        "{name}={}",
        String::from_utf8_lossy(config)
    )))
}

struct ProbeConfig {
    config: String,
    requests: CounterId,
}

impl HttpFilterConfig for ProbeConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(Probe {
            config: self.config.clone(),
            requests: self.requests,
            panic_in: String::new(),
            new_request_body: None,
            new_response_body: None,
            request_chunks: 0,
            response_chunks: 0,
        })
    }
}

struct Probe {
    config: String,
    requests: CounterId,
    panic_in: String,
    new_request_body: Option<Vec<u8>>,
    new_response_body: Option<Vec<u8>>,
    request_chunks: usize,
    response_chunks: usize,
}

impl Probe {
    fn maybe_panic(&self, hook: &str) {
        if self.panic_in == hook {
            panic!("probe: panic requested in {hook}");
        }
    }
}

fn text(v: Option<&[u8]>) -> String {
    v.map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "<none>".to_string())
}

impl HttpFilter for Probe {
    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        envoy.increment_counter(self.requests, 1);
        const RQ: HeaderKind = HeaderKind::RequestHeaders;
        self.panic_in = text(envoy.header(RQ, "x-panic", 0));
        self.maybe_panic("request_headers");
        if let Some(v) = envoy.header(RQ, "x-local-reply", 0) {
            let body = [b"local:".as_slice(), v].concat();
            envoy.send_local_reply(
                418,
                &[
                    ("x-probe-local", b"yes"),
                    ("x-multi", b"1"),
                    ("x-multi", b"2"),
                ],
                &body,
                "probe_local",
            );
            return HeadersStatus::StopIteration;
        }
        // Header operations on the request, observed by an echoing upstream.
        let count = envoy.header_count(RQ, "x-add");
        envoy.set_header(RQ, "x-set", b"set-value");
        envoy.add_header(RQ, "x-add", b"added");
        envoy.remove_header(RQ, "x-remove");
        let all: Vec<String> = envoy
            .headers(RQ)
            .iter()
            .filter(|(k, _)| k.starts_with(b"x-add"))
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        envoy.set_header(
            RQ,
            "x-probe-seen",
            format!("count_before={count};after={}", all.join(",")).as_bytes(),
        );
        envoy.set_header(RQ, "x-probe-eos", end_of_stream.to_string().as_bytes());
        // Metadata round trip and attributes.
        envoy.set_dynamic_metadata_string("probe", "key", "meta-value");
        let md = text(envoy.dynamic_metadata_string("probe", "key"));
        envoy.set_header(RQ, "x-probe-metadata", md.as_bytes());
        let src = text(envoy.attribute_string(Attribute::SourceAddress));
        let proto = text(envoy.attribute_string(Attribute::RequestProtocol));
        envoy.set_header(RQ, "x-probe-source", src.as_bytes());
        envoy.set_header(RQ, "x-probe-protocol", proto.as_bytes());
        if let Some(cfg) = envoy.per_route_config() {
            let s = cfg.downcast_ref::<String>().cloned().unwrap_or_default();
            envoy.set_header(RQ, "x-probe-route", s.as_bytes());
        }
        self.new_request_body = envoy
            .header(RQ, "x-new-request-body", 0)
            .map(<[u8]>::to_vec);
        self.new_response_body = envoy
            .header(RQ, "x-new-response-body", 0)
            .map(<[u8]>::to_vec);
        if let Some(new) = self.new_request_body.clone() {
            if end_of_stream {
                let old_len = envoy.body_len(Direction::Request);
                let ok = envoy.replace_body(Direction::Request, &new);
                envoy.set_header(
                    RQ,
                    "x-probe-replaced-in-headers",
                    format!("{ok};old_len={old_len}").as_bytes(),
                );
            } else {
                return HeadersStatus::StopIteration;
            }
        }
        HeadersStatus::Continue
    }

    fn on_request_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        self.maybe_panic("request_body");
        self.request_chunks += 1;
        let Some(new) = self.new_request_body.clone() else {
            return BodyStatus::Continue;
        };
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        let old = envoy.body(Direction::Request);
        let mut body = new;
        body.extend_from_slice(
            format!(
                "|old={}|chunks={}|len={}",
                String::from_utf8_lossy(&old),
                self.request_chunks,
                envoy.body_len(Direction::Request)
            )
            .as_bytes(),
        );
        envoy.replace_body(Direction::Request, &body);
        BodyStatus::Continue
    }

    fn on_request_trailers(&mut self, _envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        self.maybe_panic("request_trailers");
        TrailersStatus::Continue
    }

    fn on_response_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        self.maybe_panic("response_headers");
        const RS: HeaderKind = HeaderKind::ResponseHeaders;
        let upstream_add = envoy.header_count(RS, "x-resp-add");
        envoy.set_header(RS, "x-resp-set", b"set-value");
        envoy.add_header(RS, "x-resp-add", b"added");
        envoy.remove_header(RS, "x-resp-remove");
        envoy.set_header(RS, "x-probe-config", self.config.as_bytes());
        envoy.set_header(
            RS,
            "x-probe-resp-add-before",
            upstream_add.to_string().as_bytes(),
        );
        let md = text(envoy.dynamic_metadata_string("probe", "key"));
        envoy.set_header(RS, "x-probe-metadata", md.as_bytes());
        let code = envoy.attribute_int(Attribute::ResponseCode);
        envoy.set_header(RS, "x-probe-code", format!("{code:?}").as_bytes());
        if let Some(cfg) = envoy.per_route_config() {
            let s = cfg.downcast_ref::<String>().cloned().unwrap_or_default();
            envoy.set_header(RS, "x-probe-route", s.as_bytes());
        }
        if let Some(new) = self.new_response_body.clone() {
            if end_of_stream {
                envoy.replace_body(Direction::Response, &new);
            } else {
                return HeadersStatus::StopIteration;
            }
        }
        HeadersStatus::Continue
    }

    fn on_response_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        self.maybe_panic("response_body");
        self.response_chunks += 1;
        let Some(new) = self.new_response_body.clone() else {
            return BodyStatus::Continue;
        };
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        let old = envoy.body(Direction::Response);
        let mut body = new;
        body.extend_from_slice(
            format!("|old_len={}|chunks={}", old.len(), self.response_chunks).as_bytes(),
        );
        envoy.replace_body(Direction::Response, &body);
        BodyStatus::Continue
    }

    fn on_response_trailers(&mut self, _envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        self.maybe_panic("response_trailers");
        TrailersStatus::Continue
    }

    fn on_stream_complete(&mut self, _envoy: &mut dyn EnvoyHttpFilter) {
        self.maybe_panic("stream_complete");
    }
}
