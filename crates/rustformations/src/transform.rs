//! The filter behind `rustformation` (alias `http_simple_mutations`) and `my-smart-header`:
//! applies a compiled `Transformation` to the request and the response, buffering a side only
//! when its transformation reads or replaces the body.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_module::{
    BodyStatus, CounterId, Direction, EnvoyHttpFilter, HeaderKind, HeadersStatus, Hooks,
    HttpFilter, HttpFilterConfig, NewFilter, TrailersStatus, log_debug, log_warn,
};
use transformations::{
    ApplyError, BodyMode, RequestCapture, Side, SideAction, Warning, WarningKind,
};

use crate::envoy_message::{EnvoyMessage, EnvoyStreamInfo};
use crate::marker::Marker;
use crate::per_route;

/// Counters every transformation filter config defines.
#[derive(Clone, Copy)]
pub struct TransformCounters {
    /// Rendered header values that were not sent because they held CR, LF or NUL.
    pub invalid_header_dropped: CounterId,
    /// Values whose render failed (template error or render budget exceeded).
    pub render_errors: CounterId,
    /// Values whose render exceeded the budget (fuel, bytes, time, output size); also counted
    /// in `render_errors`.
    pub budget_exceeded: CounterId,
}

pub struct TransformFilterConfig {
    /// Filter name, for log lines.
    pub name: &'static str,
    /// The listener-level transformation; a per-route one replaces it (no merge).
    pub listener: crate::SharedTransformation,
    /// Added to every response this filter transformed (`rustformation` only).
    pub marker: Option<Arc<Marker>>,
    /// Whether the listener-level response side always sends the marker itself.
    pub listener_sends_marker: bool,
    pub counters: TransformCounters,
}

impl TransformFilterConfig {
    fn filter(&self) -> TransformFilter {
        TransformFilter {
            name: self.name,
            transformation: self.listener.clone(),
            marker: self.marker.clone(),
            response_sends_marker: self.listener_sends_marker,
            counters: self.counters,
            request_capture: RequestCapture::default(),
            start_time: SystemTime::UNIX_EPOCH,
            headers_only: false,
            route_resolved: false,
            request: Phase::Idle,
            response: Phase::Idle,
        }
    }
}

impl HttpFilterConfig for TransformFilterConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(self.filter())
    }

    /// In the stream's one allocation.
    fn new_stream_filter(&self) -> NewFilter {
        NewFilter::new(self.filter())
    }

    /// Nothing can happen on a stream when the listener-level transformation has no work, no
    /// marker is sent, and Envoy holds no per-route config of this module (so no route can carry
    /// one).
    fn stream_is_idle(&self) -> bool {
        self.marker.is_none()
            && !self.listener.request().has_work()
            && !self.listener.response().has_work()
            && !envoy_module::per_route_configs_present()
    }
}

/// Where one side of the stream stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Nothing applied yet.
    Idle,
    /// Headers were held back; the body is being buffered until end of stream.
    Buffering,
    /// The transformation ran (or had nothing to do).
    Done,
}

struct TransformFilter {
    name: &'static str,
    transformation: crate::SharedTransformation,
    marker: Option<Arc<Marker>>,
    /// Whether the chosen transformation's response side always sends the marker itself.
    response_sends_marker: bool,
    counters: TransformCounters,
    /// What the response side reads of the request as the client sent it (`request_header()`,
    /// `%REQ()%`), taken before our own request transformation and the router's rewrite.
    request_capture: RequestCapture,
    start_time: SystemTime,
    /// WebSocket upgrade or CONNECT: header operations only, never buffer.
    headers_only: bool,
    /// Whether the route's config and the request snapshot were taken (normally in the request
    /// headers callback; in the response callback for a local reply made before we ran).
    route_resolved: bool,
    request: Phase,
    response: Phase,
}

impl TransformFilter {
    fn side(&self, direction: Direction) -> &Side {
        match direction {
            Direction::Request => self.transformation.request(),
            Direction::Response => self.transformation.response(),
        }
    }

    fn phase_mut(&mut self, direction: Direction) -> &mut Phase {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// Runs the transformation of one side. Returns false when it answered with a local reply.
    fn apply(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
        mode: BodyMode,
    ) -> bool {
        *self.phase_mut(direction) = Phase::Done;
        let shared = RefCell::new(envoy);
        let mut message = EnvoyMessage {
            envoy: &shared,
            direction,
        };
        let mut info = EnvoyStreamInfo {
            envoy: &shared,
            start_time: self.start_time,
        };
        let result = match direction {
            Direction::Request => self
                .transformation
                .apply_request(&mut message, mode, &mut info),
            Direction::Response => self.transformation.apply_response_captured(
                &mut message,
                &self.request_capture,
                mode,
                &mut info,
            ),
        };
        let envoy = shared.into_inner();
        match result {
            Ok(warnings) => {
                self.report(envoy, &warnings);
                if direction == Direction::Response {
                    self.mark(envoy);
                }
                true
            }
            Err(error) => {
                self.reply_error(envoy, direction, &error);
                false
            }
        }
    }

    /// Adds the marker header (`rustformation` only) to the response, unless the response side
    /// has just set it to the same literal (as the lab's policy does).
    fn mark(&self, envoy: &mut dyn EnvoyHttpFilter) {
        if let Some(marker) = &self.marker
            && !self.response_sends_marker
        {
            envoy.set_header(
                HeaderKind::ResponseHeaders,
                &marker.name,
                marker.value.as_bytes(),
            );
        }
    }

    fn report(&self, envoy: &mut dyn EnvoyHttpFilter, warnings: &[Warning]) {
        for warning in warnings {
            crate::outside_envoy::report_warning(warning);
            let counter = match warning.kind {
                WarningKind::InvalidHeaderValue => self.counters.invalid_header_dropped,
                WarningKind::Render | WarningKind::Budget => self.counters.render_errors,
            };
            envoy.increment_counter(counter, 1);
            if warning.kind == WarningKind::Budget {
                envoy.increment_counter(self.counters.budget_exceeded, 1);
                if !self.transformation.first_budget_warning() {
                    log_debug!("{}: {}", self.name, warning);
                    continue;
                }
            }
            log_warn!("{}: {}", self.name, warning);
        }
    }

    fn reply_error(
        &self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
        error: &ApplyError,
    ) {
        log_debug!(
            "{}: {:?} transformation answered {}: {error}",
            self.name,
            direction,
            error.status()
        );
        // Envoy runs the response hooks of our own local reply while this hook is still live, and
        // the SDK passes such re-entrant calls through: the marker travels with the reply.
        crate::outside_envoy::report_reply_reason(error);
        let marker: Vec<(&str, &[u8])> = self
            .marker
            .iter()
            .map(|m| (m.name.as_str(), m.value.as_bytes()))
            .collect();
        envoy.send_local_reply(error.status(), &marker, b"", error.details());
    }

    /// Picks the route's transformation and snapshots what the response side reads of the request.
    fn resolve_route(&mut self, envoy: &mut dyn EnvoyHttpFilter) {
        if self.route_resolved {
            return;
        }
        self.route_resolved = true;
        if let Some(route) = per_route::transformation(envoy) {
            self.transformation = route.transformation;
            self.response_sends_marker = route.sends_marker;
        }
        // The clock is read only for a transformation that renders %START_TIME%.
        if self.transformation.reads_start_time() {
            self.start_time = crate::outside_envoy::stream_start_time();
        }
        let shared = RefCell::new(envoy);
        let request = EnvoyMessage {
            envoy: &shared,
            direction: Direction::Request,
        };
        // Only a side that buffers cares; header-only transformations skip the two lookups.
        self.headers_only = self.transformation.headers_only_stream(&request);
        self.transformation
            .capture_request_into(&request, &mut self.request_capture);
    }

    /// The headers callback of either side.
    fn on_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let action = self.side(direction).action(self.headers_only);
        if action == SideAction::PassThrough {
            *self.phase_mut(direction) = Phase::Done;
            if direction == Direction::Response {
                // The marker proves the module ran, even where the response side has no work.
                self.mark(envoy);
            }
            return HeadersStatus::Continue;
        }
        if action == SideAction::HeadersOnly {
            let ok = self.apply(envoy, direction, BodyMode::HeadersOnly);
            return if ok {
                HeadersStatus::Continue
            } else {
                HeadersStatus::StopIteration
            };
        }
        if end_of_stream {
            // No body follows; the body template may still create one.
            let ok = self.apply(envoy, direction, BodyMode::Buffered);
            return if ok {
                HeadersStatus::Continue
            } else {
                HeadersStatus::StopIteration
            };
        }
        *self.phase_mut(direction) = Phase::Buffering;
        HeadersStatus::StopIteration
    }

    /// The body callback of either side.
    fn on_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
        end_of_stream: bool,
    ) -> BodyStatus {
        if *self.phase_mut(direction) != Phase::Buffering {
            return BodyStatus::Continue;
        }
        if !end_of_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        if self.apply(envoy, direction, BodyMode::Buffered) {
            BodyStatus::Continue
        } else {
            BodyStatus::StopIterationNoBuffer
        }
    }

    /// Trailers end a buffered body that arrived without an end-of-stream flag.
    fn on_trailers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
    ) -> TrailersStatus {
        if *self.phase_mut(direction) == Phase::Buffering
            && !self.apply(envoy, direction, BodyMode::Buffered)
        {
            return TrailersStatus::StopIteration;
        }
        TrailersStatus::Continue
    }
}

impl HttpFilter for TransformFilter {
    /// Until the route is known, both headers hooks (a local reply made before the request hook
    /// reaches the response side first); then only what the chosen transformation needs.
    fn hooks(&self) -> Hooks {
        if !self.route_resolved {
            return Hooks::REQUEST_HEADERS | Hooks::RESPONSE_HEADERS;
        }
        let mut hooks = Hooks::NONE;
        if self.request == Phase::Buffering {
            hooks = hooks | Hooks::REQUEST_BODY | Hooks::REQUEST_TRAILERS;
        }
        match self.response {
            Phase::Idle
                if self.marker.is_some()
                    || self.side(Direction::Response).action(self.headers_only)
                        != SideAction::PassThrough =>
            {
                hooks = hooks | Hooks::RESPONSE_HEADERS;
            }
            Phase::Buffering => hooks = hooks | Hooks::RESPONSE_BODY | Hooks::RESPONSE_TRAILERS,
            _ => {}
        }
        hooks
    }

    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        self.resolve_route(envoy);
        self.on_headers(envoy, Direction::Request, end_of_stream)
    }

    fn on_request_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        self.on_body(envoy, Direction::Request, end_of_stream)
    }

    fn on_request_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        self.on_trailers(envoy, Direction::Request)
    }

    fn on_response_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        // A local reply made by an earlier filter (a 413 from a buffer limit, say) reaches the
        // response side without our request callbacks having run.
        self.resolve_route(envoy);
        self.on_headers(envoy, Direction::Response, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        self.on_body(envoy, Direction::Response, end_of_stream)
    }

    fn on_response_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        self.on_trailers(envoy, Direction::Response)
    }
}

#[cfg(test)]
mod tests {
    //! The filter over the in-memory Envoy: buffering decisions, per-route replacement, the
    //! request snapshot, local replies, the marker and counters (kgateway-contract.md).

    use std::sync::Arc;
    use transformations::intern::Interned;

    use envoy_module::testing::FakeEnvoy;
    use envoy_module::{
        Attribute, BodyStatus, CounterId, HeaderKind, HeadersStatus, Hooks, HttpFilter,
        HttpFilterConfig, TrailersStatus,
    };
    use transformations::Transformation;

    use super::{TransformCounters, TransformFilterConfig};
    use crate::marker::Marker;
    use crate::per_route::{RouteConfig, RouteTransformation, sends_marker};

    const DROPPED: CounterId = CounterId(0);
    const RENDER: CounterId = CounterId(1);
    const BUDGET: CounterId = CounterId(2);

    fn marker() -> Marker {
        Marker {
            name: "x-custom-transformed".into(),
            value: "true".into(),
        }
    }

    fn config(listener: &str) -> TransformFilterConfig {
        let listener = Transformation::from_json(listener.as_bytes()).unwrap();
        TransformFilterConfig {
            name: "rustformation",
            listener_sends_marker: sends_marker(&listener, Some(&marker())),
            listener: Interned::unshared(listener),
            marker: Some(Arc::new(marker())),
            counters: TransformCounters {
                invalid_header_dropped: DROPPED,
                render_errors: RENDER,
                budget_exceeded: BUDGET,
            },
        }
    }

    fn filter(listener: &str) -> Box<dyn HttpFilter> {
        config(listener).new_filter()
    }

    fn route(envoy: &mut FakeEnvoy, json: &str) {
        envoy.per_route = Some(Arc::new(RouteConfig::Transformation(
            RouteTransformation::new(
                Interned::unshared(Transformation::from_json(json.as_bytes()).unwrap()),
                Some(&marker()),
            ),
        )));
    }

    fn post(headers: &[(&str, &str)]) -> FakeEnvoy {
        let mut pairs = vec![(":method", "POST"), (":path", "/p")];
        pairs.extend_from_slice(headers);
        FakeEnvoy::with_request_headers(pairs)
    }

    fn req(envoy: &FakeEnvoy, name: &str) -> Option<String> {
        envoy.request_headers.get_str(name)
    }

    fn resp(envoy: &FakeEnvoy, name: &str) -> Option<String> {
        envoy.response_headers.get_str(name)
    }

    #[test]
    fn empty_config_passes_through_unbuffered_with_only_the_marker() {
        let mut f = filter("{}");
        let mut e = post(&[("x-a", "1")]);
        assert_eq!(f.on_request_headers(&mut e, false), HeadersStatus::Continue);
        assert_eq!(f.on_request_body(&mut e, false), BodyStatus::Continue);
        assert_eq!(f.on_request_body(&mut e, true), BodyStatus::Continue);
        e.response_headers.add(":status", b"200");
        assert_eq!(
            f.on_response_headers(&mut e, false),
            HeadersStatus::Continue
        );
        assert_eq!(f.on_response_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(req(&e, "x-a").as_deref(), Some("1"));
        assert_eq!(resp(&e, "x-custom-transformed").as_deref(), Some("true"));
        assert_eq!(e.response_headers.len(), 2);
    }

    /// The hooks the filter asks the SDK for follow what the stream still needs: both headers
    /// hooks until the route is known, the body hooks only while buffering, nothing after.
    #[test]
    fn the_filter_asks_only_for_the_hooks_it_still_needs() {
        let mut f = filter(r#"{"request":{"body":{"value":"{{ body() }}"}}}"#);
        assert_eq!(f.hooks(), Hooks::REQUEST_HEADERS | Hooks::RESPONSE_HEADERS);
        let mut e = post(&[("content-length", "2")]);
        f.on_request_headers(&mut e, false);
        assert_eq!(
            f.hooks(),
            Hooks::REQUEST_BODY | Hooks::REQUEST_TRAILERS | Hooks::RESPONSE_HEADERS
        );
        e.request_body = b"ab".to_vec();
        f.on_request_body(&mut e, true);
        // The marker still has to be added to the response.
        assert_eq!(f.hooks(), Hooks::RESPONSE_HEADERS);
        e.response_headers.add(":status", b"200");
        f.on_response_headers(&mut e, false);
        assert_eq!(f.hooks(), Hooks::NONE);

        // No marker and nothing for the response: done once the request side ran.
        let mut quiet = config(r#"{"request":{"set":[{"name":"x-a","value":"1"}]}}"#);
        quiet.marker = None;
        let mut f = quiet.new_filter();
        let mut e = post(&[]);
        f.on_request_headers(&mut e, true);
        assert_eq!(f.hooks(), Hooks::NONE);
        assert_eq!(req(&e, "x-a").as_deref(), Some("1"));
    }

    /// A stream is idle (no filter at all) only when nothing could happen on it: no listener
    /// work, no marker, and no per-route config of the module anywhere.
    #[test]
    fn only_a_config_with_nothing_to_do_makes_idle_streams() {
        let mut empty = config("{}");
        assert!(!empty.stream_is_idle(), "the marker is work");
        empty.marker = None;
        assert!(empty.stream_is_idle());
        let mut work = config(r#"{"response":{"set":[{"name":"x-a","value":"1"}]}}"#);
        work.marker = None;
        assert!(!work.stream_is_idle());
    }

    /// A policy that sets the marker header to the marker's own value leaves nothing for the
    /// marker to do; the header is still there once, with that value.
    #[test]
    fn a_policy_that_sets_the_marker_itself_gets_it_once() {
        for policy in [
            r#"{"response":{"set":[{"name":"X-Custom-Transformed","value":"true"}]}}"#,
            r#"{"response":{"set":[{"name":"x-custom-transformed","value":"no"}]}}"#,
            r#"{"response":{"set":[{"name":"x-custom-transformed","value":"true"}],"remove":["x-custom-transformed"]}}"#,
        ] {
            // As the listener's policy, and as a route's (whose check was made at its load).
            for per_route in [false, true] {
                let mut e = post(&[]);
                let mut f = if per_route {
                    route(&mut e, policy);
                    filter("{}")
                } else {
                    filter(policy)
                };
                f.on_request_headers(&mut e, true);
                e.response_headers.add(":status", b"200");
                f.on_response_headers(&mut e, true);
                assert_eq!(
                    e.response_headers
                        .values("x-custom-transformed")
                        .collect::<Vec<_>>(),
                    vec![&b"true"[..]],
                    "{policy} per route: {per_route}"
                );
            }
        }
    }

    #[test]
    fn body_template_buffers_until_end_of_stream() {
        let mut f = filter(r#"{"request":{"body":{"value":"new {{ body() }}"}}}"#);
        let mut e = post(&[("content-length", "3")]);
        assert_eq!(
            f.on_request_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        e.request_body = b"ab".to_vec();
        assert_eq!(
            f.on_request_body(&mut e, false),
            BodyStatus::StopIterationAndBuffer
        );
        assert_eq!(e.request_body, b"ab");
        e.request_body = b"abc".to_vec();
        assert_eq!(f.on_request_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(e.request_body, b"new abc");
        assert_eq!(req(&e, "content-length").as_deref(), Some("7"));
    }

    #[test]
    fn headers_with_end_of_stream_run_at_once_and_can_create_a_body() {
        let mut f = filter(r#"{"request":{"body":{"value":"created"}}}"#);
        let mut e = post(&[]);
        assert_eq!(f.on_request_headers(&mut e, true), HeadersStatus::Continue);
        assert_eq!(e.request_body, b"created");
        assert_eq!(req(&e, "content-length").as_deref(), Some("7"));
    }

    #[test]
    fn trailers_end_a_buffered_body() {
        let mut f = filter(r#"{"request":{"body":{"value":"[{{ body() }}]"}}}"#);
        let mut e = post(&[]);
        assert_eq!(
            f.on_request_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        e.request_body = b"x".to_vec();
        assert_eq!(
            f.on_request_body(&mut e, false),
            BodyStatus::StopIterationAndBuffer
        );
        assert_eq!(f.on_request_trailers(&mut e), TrailersStatus::Continue);
        assert_eq!(e.request_body, b"[x]");
    }

    #[test]
    fn header_only_side_is_not_buffered() {
        // Documented difference: a side that never reads or replaces the body streams.
        let mut f =
            filter(r#"{"request":{"set":[{"name":"x-a","value":"{{ header(\"x-b\") }}"}]}}"#);
        let mut e = post(&[("x-b", "v")]);
        assert_eq!(f.on_request_headers(&mut e, false), HeadersStatus::Continue);
        assert_eq!(req(&e, "x-a").as_deref(), Some("v"));
        assert_eq!(f.on_request_body(&mut e, false), BodyStatus::Continue);
    }

    #[test]
    fn parse_as_none_is_headers_only_and_body_renders_empty() {
        let mut f = filter(
            r#"{"request":{"body":{"parseAs":"None","value":"ignored"},
                "set":[{"name":"x-b","value":"[{{ body() }}{{ context() }}]"}]}}"#,
        );
        let mut e = post(&[]);
        e.request_body = b"payload".to_vec();
        assert_eq!(f.on_request_headers(&mut e, false), HeadersStatus::Continue);
        assert_eq!(f.on_request_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(req(&e, "x-b").as_deref(), Some("[]"));
        assert_eq!(e.request_body, b"payload");
    }

    #[test]
    fn websocket_upgrade_and_connect_are_never_buffered() {
        let json = r#"{"request":{"body":{"value":"B {{ body() }}"},"set":[{"name":"x-s","value":"[{{ body() }}]"}]},
                       "response":{"body":{"value":"R"}}}"#;
        for headers in [
            vec![(":method", "GET"), ("upgrade", "WebSocket")],
            vec![(":method", "GET"), ("upgrade", "websocket")],
            vec![(":method", "CONNECT")],
        ] {
            let mut f = filter(json);
            let mut e = FakeEnvoy::with_request_headers(headers.clone());
            e.request_body = b"frame".to_vec();
            assert_eq!(
                f.on_request_headers(&mut e, false),
                HeadersStatus::Continue,
                "{headers:?}"
            );
            assert_eq!(req(&e, "x-s").as_deref(), Some("[]"));
            assert_eq!(f.on_request_body(&mut e, false), BodyStatus::Continue);
            assert_eq!(e.request_body, b"frame");
            e.response_headers.add(":status", b"101");
            assert_eq!(
                f.on_response_headers(&mut e, false),
                HeadersStatus::Continue
            );
            assert_eq!(f.on_response_body(&mut e, false), BodyStatus::Continue);
        }
    }

    #[test]
    fn undeclared_variable_answers_400_with_details_on_either_side() {
        let mut f = filter(r#"{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}"#);
        let mut e = post(&[]);
        assert_eq!(
            f.on_request_headers(&mut e, true),
            HeadersStatus::StopIteration
        );
        let reply = e.local_reply.clone().unwrap();
        assert_eq!(reply.status, 400);
        assert!(reply.body.is_empty());
        assert_eq!(
            reply.headers,
            [("x-custom-transformed".to_string(), b"true".to_vec())]
        );
        assert_eq!(
            reply.details,
            "undeclared json variables in transformation template"
        );

        let mut f = filter(r#"{"response":{"set":[{"name":"x","value":"{{ model }}"}]}}"#);
        let mut e = post(&[]);
        assert_eq!(f.on_request_headers(&mut e, true), HeadersStatus::Continue);
        e.response_headers.add(":status", b"200");
        assert_eq!(
            f.on_response_headers(&mut e, true),
            HeadersStatus::StopIteration
        );
        assert_eq!(e.local_reply.unwrap().status, 400);
    }

    #[test]
    fn invalid_json_answers_400_from_the_body_callback() {
        let mut f = filter(
            r#"{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ a }}"}]}}"#,
        );
        let mut e = post(&[]);
        assert_eq!(
            f.on_request_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        e.request_body = b"{nope".to_vec();
        assert_eq!(
            f.on_request_body(&mut e, true),
            BodyStatus::StopIterationNoBuffer
        );
        let reply = e.local_reply.clone().unwrap();
        assert_eq!(reply.status, 400);
        assert!(reply.body.is_empty());
        assert_eq!(
            reply.details,
            "json parsing error in transformation template"
        );
        assert_eq!(req(&e, "x"), None);

        // A valid body the same way: keys are variables.
        let mut f = filter(
            r#"{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ a }}"}]}}"#,
        );
        let mut e = post(&[]);
        f.on_request_headers(&mut e, false);
        e.request_body = br#"{"a":"json"}"#.to_vec();
        assert_eq!(f.on_request_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(req(&e, "x").as_deref(), Some("json"));
    }

    #[test]
    fn per_route_config_replaces_the_listener_config() {
        let mut f = filter(
            r#"{"request":{"set":[{"name":"x-listener","value":"l"},{"name":"x-both","value":"l"}]}}"#,
        );
        let mut e = post(&[]);
        route(
            &mut e,
            r#"{"request":{"set":[{"name":"x-both","value":"r"}]}}"#,
        );
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-both").as_deref(), Some("r"));
        assert_eq!(req(&e, "x-listener"), None); // no merge

        // Without a per-route config, the listener config applies.
        let mut f = filter(r#"{"request":{"set":[{"name":"x-listener","value":"l"}]}}"#);
        let mut e = post(&[]);
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-listener").as_deref(), Some("l"));
    }

    #[test]
    fn response_reads_the_request_as_the_client_sent_it() {
        let mut f = filter(
            r#"{"request":{"set":[{"name":"x-who","value":"us"},{"name":":path","value":"/rewritten"}]},
                "response":{"set":[{"name":"x-who-was","value":"{{ request_header(\"X-Who\") }}"},
                                   {"name":"x-path","value":"%REQ(:path)%"},
                                   {"name":"x-status","value":"{{ header(\":status\") }}"}]}}"#,
        );
        let mut e = post(&[("x-who", "client")]);
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-who").as_deref(), Some("us"));
        e.response_headers.add(":status", b"404");
        f.on_response_headers(&mut e, true);
        assert_eq!(resp(&e, "x-who-was").as_deref(), Some("client"));
        assert_eq!(resp(&e, "x-path").as_deref(), Some("/p"));
        assert_eq!(resp(&e, "x-status").as_deref(), Some("404"));
    }

    #[test]
    fn local_reply_before_our_request_callbacks_still_gets_the_response_side() {
        // A 413 from the buffer filter reaches our response callbacks with no request callback
        // having run: the route config must still be found, and the request snapshot taken.
        let mut f = filter("{}");
        let mut e = post(&[("x-who", "client")]);
        route(
            &mut e,
            r#"{"response":{"body":{"value":"rewritten {{ header(\":status\") }} {{ request_header(\"x-who\") }}"}}}"#,
        );
        e.response_headers.add(":status", b"413");
        e.response_headers.add("content-length", b"17");
        assert_eq!(
            f.on_response_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        e.response_body = b"Payload Too Large".to_vec();
        assert_eq!(f.on_response_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(e.response_body, b"rewritten 413 client");
        assert_eq!(resp(&e, "content-length").as_deref(), Some("20"));
        assert_eq!(resp(&e, "x-custom-transformed").as_deref(), Some("true"));
    }

    #[test]
    fn status_pseudo_header_and_empty_body() {
        let mut f = filter(
            r#"{"response":{"set":[{"name":":status","value":"201"}],
                            "body":{"value":"{% if false %}x{% endif %}"}}}"#,
        );
        let mut e = post(&[]);
        f.on_request_headers(&mut e, true);
        e.response_headers.add(":status", b"200");
        e.response_headers.add("content-type", b"application/json");
        e.response_headers.add("content-length", b"2");
        assert_eq!(
            f.on_response_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        e.response_body = b"{}".to_vec();
        assert_eq!(f.on_response_body(&mut e, true), BodyStatus::Continue);
        assert_eq!(resp(&e, ":status").as_deref(), Some("201"));
        assert_eq!(resp(&e, "content-length").as_deref(), Some("0"));
        assert_eq!(resp(&e, "content-type"), None);
        assert!(e.response_body.is_empty());
    }

    #[test]
    fn dynamic_metadata_only_when_non_empty() {
        let mut f = filter(
            r#"{"request":{"dynamicMetadata":[
                {"namespace":"ns","key":"k","value":{"stringValue":"{{ header(\"x-in\") }}"}},
                {"namespace":"ns","key":"empty","value":{"stringValue":"{{ header(\"x-missing\") }}"}}]}}"#,
        );
        let mut e = post(&[("x-in", "v")]);
        f.on_request_headers(&mut e, true);
        assert_eq!(
            e.dynamic_metadata
                .get(&("ns".into(), "k".into()))
                .map(String::as_str),
            Some("v")
        );
        assert!(
            !e.dynamic_metadata
                .contains_key(&("ns".into(), "empty".into()))
        );
    }

    #[test]
    fn metadata_function_reads_other_filters_metadata_in_both_directions() {
        let mut f = filter(
            r#"{"request":{"set":[{"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"}]},
                "response":{"set":[
                    {"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"},
                    {"name":"x-owner","value":"{{ metadata('team', 'owner', source='route') }}"},
                    {"name":"x-none","value":"{{ metadata('envoy.lb', 'absent') }}"}]}}"#,
        );
        let mut e = post(&[]);
        e.dynamic_metadata
            .insert(("envoy.lb".into(), "tenant".into()), "acme".into());
        e.metadata
            .entry(envoy_module::MetadataSource::Route)
            .or_default()
            .insert(("team".into(), "owner".into()), "payments".into());
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-tenant").as_deref(), Some("acme"));
        e.response_headers.add(":status", b"200");
        f.on_response_headers(&mut e, true);
        assert_eq!(resp(&e, "x-tenant").as_deref(), Some("acme"));
        assert_eq!(resp(&e, "x-owner").as_deref(), Some("payments"));
        assert_eq!(resp(&e, "x-none"), None);
    }

    #[test]
    fn warnings_are_counted() {
        let mut f = filter(
            r#"{"request":{"set":[{"name":"x-err","value":"{{ \"a\" + 1 }}"},
                                  {"name":"x-crlf","value":"{{ header(\"x-in\") }}"}]}}"#,
        );
        let mut e = post(&[("x-in", "a\r\nb"), ("x-err", "orig"), ("x-crlf", "orig")]);
        f.on_request_headers(&mut e, true);
        assert_eq!(e.counter(RENDER), 1);
        assert_eq!(e.counter(DROPPED), 1);
        assert_eq!(req(&e, "x-err"), None);
        assert_eq!(req(&e, "x-crlf"), None);
    }

    #[test]
    fn budget_trips_are_counted_as_render_errors_and_budget_exceeded() {
        let config = config(
            r#"{"request":{"set":[{"name":"x-big","value":"{{ (\"a\" * (request_header(\"x-n\")|int))|length }}"}]}}"#,
        );
        for n in 1..=2 {
            let mut f = config.new_filter();
            let mut e = post(&[("x-n", "3000000000"), ("x-big", "orig")]);
            f.on_request_headers(&mut e, true);
            assert_eq!(req(&e, "x-big"), None, "removed like any render error");
            assert_eq!(e.counter(RENDER), 1);
            assert_eq!(e.counter(BUDGET), 1);
            // The first trip of the policy is the warning; later ones are debug lines.
            assert!(!config.listener.first_budget_warning(), "request {n}");
        }
        let mut f = config.new_filter();
        let mut e = post(&[("x-n", "3")]);
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-big").as_deref(), Some("3"));
        assert_eq!(e.counter(BUDGET), 0);
    }

    #[test]
    fn no_marker_when_switched_off() {
        let mut config = config(r#"{"response":{"set":[{"name":"x","value":"y"}]}}"#);
        config.marker = None;
        let mut f = config.new_filter();
        let mut e = post(&[]);
        f.on_request_headers(&mut e, true);
        e.response_headers.add(":status", b"200");
        f.on_response_headers(&mut e, true);
        assert_eq!(resp(&e, "x").as_deref(), Some("y"));
        assert_eq!(resp(&e, "x-custom-transformed"), None);
    }

    #[test]
    fn remote_address_operator_reads_the_source_attribute() {
        let mut f = filter(
            r#"{"request":{"set":[{"name":"x-ip","value":"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]}}"#,
        );
        let mut e = post(&[]);
        e.string_attributes
            .insert(Attribute::SourceAddress, b"[2001:db8::1]:5555".to_vec());
        f.on_request_headers(&mut e, true);
        assert_eq!(req(&e, "x-ip").as_deref(), Some("2001:db8::1"));
        assert_eq!(e.map(HeaderKind::RequestHeaders).count("x-ip"), 1);
    }
}
