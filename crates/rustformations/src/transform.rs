//! The filter behind `rustformation` (alias `http_simple_mutations`) and `my-smart-header`:
//! applies a compiled `Transformation` to the request and the response, buffering a side only
//! when its transformation reads or replaces the body.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_module::{
    BodyStatus, CounterId, Direction, EnvoyHttpFilter, HeaderKind, HeadersStatus, HttpFilter,
    HttpFilterConfig, TrailersStatus, log_debug, log_warn,
};
use transformations::{
    ApplyError, BodyMode, HeaderSnapshot, Side, Transformation, Warning, WarningKind,
    is_upgrade_or_connect,
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
}

pub struct TransformFilterConfig {
    /// Filter name, for log lines.
    pub name: &'static str,
    /// The listener-level transformation; a per-route one replaces it (no merge).
    pub listener: Arc<Transformation>,
    /// Added to every response this filter transformed (`rustformation` only).
    pub marker: Option<Arc<Marker>>,
    pub counters: TransformCounters,
}

impl HttpFilterConfig for TransformFilterConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(TransformFilter {
            name: self.name,
            transformation: self.listener.clone(),
            marker: self.marker.clone(),
            counters: self.counters,
            request_snapshot: HeaderSnapshot::default(),
            start_time: SystemTime::UNIX_EPOCH,
            headers_only: false,
            route_resolved: false,
            request: Phase::Idle,
            response: Phase::Idle,
        })
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
    transformation: Arc<Transformation>,
    marker: Option<Arc<Marker>>,
    counters: TransformCounters,
    /// Request headers as the client sent them, for `request_header()` and `%REQ()%` in the
    /// response phase (taken before our own request transformation and the router's rewrite).
    request_snapshot: HeaderSnapshot,
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

    /// Whether this side must see its whole body before the transformation runs.
    fn buffers(&self, direction: Direction) -> bool {
        !self.headers_only && self.side(direction).needs_body()
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
            Direction::Response => self.transformation.apply_response(
                &mut message,
                &self.request_snapshot,
                mode,
                &mut info,
            ),
        };
        let envoy = shared.into_inner();
        match result {
            Ok(warnings) => {
                self.report(envoy, &warnings);
                if let (Direction::Response, Some(marker)) = (direction, &self.marker) {
                    envoy.set_header(
                        HeaderKind::ResponseHeaders,
                        &marker.name,
                        marker.value.as_bytes(),
                    );
                }
                true
            }
            Err(error) => {
                self.reply_error(envoy, direction, &error);
                false
            }
        }
    }

    fn report(&self, envoy: &mut dyn EnvoyHttpFilter, warnings: &[Warning]) {
        for warning in warnings {
            let counter = match warning.kind {
                WarningKind::InvalidHeaderValue => self.counters.invalid_header_dropped,
                WarningKind::Render | WarningKind::Budget => self.counters.render_errors,
            };
            envoy.increment_counter(counter, 1);
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
        envoy.send_local_reply(error.status(), &[], b"", error.details());
    }

    /// Picks the route's transformation and snapshots what the response side reads of the request.
    fn resolve_route(&mut self, envoy: &mut dyn EnvoyHttpFilter) {
        if self.route_resolved {
            return;
        }
        self.route_resolved = true;
        self.start_time = SystemTime::now();
        if let Some(route) = per_route::transformation(envoy) {
            self.transformation = route;
        }
        let shared = RefCell::new(envoy);
        let request = EnvoyMessage {
            envoy: &shared,
            direction: Direction::Request,
        };
        self.headers_only = is_upgrade_or_connect(&request);
        self.request_snapshot = self.transformation.capture_request_headers(&request);
    }

    /// The headers callback of either side.
    fn on_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        direction: Direction,
        end_of_stream: bool,
    ) -> HeadersStatus {
        if !self.side(direction).has_work() {
            *self.phase_mut(direction) = Phase::Done;
            if direction == Direction::Response {
                // The marker proves the module ran, even where the response side has no work.
                self.apply(envoy, direction, BodyMode::HeadersOnly);
            }
            return HeadersStatus::Continue;
        }
        if !self.buffers(direction) {
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
