//! In-memory Envoy for unit tests: [`FakeEnvoy`] implements [`EnvoyHttpFilter`] and
//! [`FakeFilterConfigEnvoy`] implements [`EnvoyFilterConfig`], so filters are tested without Envoy.
//!
//! The fake follows the real semantics the SDK documents: header names are case-insensitive and
//! keep insertion order, `set_header` replaces every value, `add_header` appends one, bodies are
//! whole byte strings, and a local reply is recorded (only the first one, as Envoy sends one).
//!
//! [`FakeEnvoy::send_request`] and [`FakeEnvoy::send_response`] drive a filter through a whole
//! message as Envoy's filter manager does (the hooks in order, only those the filter asks for,
//! buffering while it stops, a local reply ending the side), so a tool can show what a filter does
//! to one exchange by running the filter itself.

use std::collections::{BTreeMap, HashMap};

use crate::api::{
    Attribute, BodyStatus, CounterId, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind,
    HeadersStatus, Hooks, HttpFilter, MetadataSource, PerRouteConfig, TrailersStatus,
};

/// An ordered multi-map of headers with case-insensitive names (stored lower-case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Build from `(name, value)` pairs, keeping repeated names as multiple values.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut map = Self::new();
        for (n, v) in pairs {
            map.add(n.as_ref(), v.as_ref());
        }
        map
    }

    /// The `index`-th value of `name`.
    pub fn get(&self, name: &str, index: usize) -> Option<&[u8]> {
        self.values(name).nth(index)
    }

    /// The first value of `name` as UTF-8 (lossy), for assertions.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name, 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of `name`, in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn count(&self, name: &str) -> usize {
        self.values(name).count()
    }

    /// Replace every value of `name` with `value` (kept at the position of the first one).
    pub fn set(&mut self, name: &str, value: &[u8]) {
        let lower = name.to_ascii_lowercase();
        match self.entries.iter().position(|(k, _)| *k == lower) {
            Some(first) => {
                self.entries[first].1 = value.to_vec();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    let keep = *k != lower || i == first;
                    i += 1;
                    keep
                });
            }
            None => self.entries.push((lower, value.to_vec())),
        }
    }

    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    pub fn remove(&mut self, name: &str) {
        let lower = name.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != lower);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A local reply as the filter sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub details: String,
}

impl LocalReply {
    /// The response the client receives for this reply, as Envoy sends it: `:status`, the
    /// reply's headers, `content-length`, and `content-type: text/plain` for a non-empty body
    /// that names no type.
    pub fn to_client(&self) -> HttpMessage {
        let mut headers = HeaderMap::new();
        headers.add(":status", self.status.to_string().as_bytes());
        for (name, value) in &self.headers {
            headers.add(name, value);
        }
        headers.set("content-length", self.body.len().to_string().as_bytes());
        if !self.body.is_empty() && headers.count("content-type") == 0 {
            headers.add("content-type", b"text/plain");
        }
        HttpMessage {
            headers,
            body: self.body.clone(),
            trailers: HeaderMap::new(),
        }
    }
}

/// One HTTP message whole: headers (pseudo-headers included), body, trailers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpMessage {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// Where one side of the stream went after the filter ran on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Passed on: the request upstream, the response to the client (the fake's maps of that
    /// direction hold it as sent).
    Forwarded,
    /// The filter answered with a local reply ([`FakeEnvoy::local_reply`]) instead.
    LocalReply,
}

/// An in-memory stream. Fields are public so tests arrange and inspect them directly.
#[derive(Default)]
pub struct FakeEnvoy {
    pub request_headers: HeaderMap,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// The first local reply sent, if any.
    pub local_reply: Option<LocalReply>,
    /// Dynamic metadata by (namespace, key).
    pub dynamic_metadata: BTreeMap<(String, String), String>,
    /// Every dynamic metadata write of the filter, `(namespace, key, value)` in order.
    pub dynamic_metadata_writes: Vec<(String, String, String)>,
    /// Route, cluster and host metadata by source, then (namespace, key) (string values).
    pub metadata: BTreeMap<MetadataSource, BTreeMap<(String, String), String>>,
    pub string_attributes: HashMap<Attribute, Vec<u8>>,
    pub int_attributes: HashMap<Attribute, i64>,
    /// Counter values by id (ids come from [`FakeFilterConfigEnvoy`]).
    pub counters: HashMap<CounterId, u64>,
    pub per_route: Option<PerRouteConfig>,
    /// How many times the filter resumed each direction.
    pub continued_requests: usize,
    pub continued_responses: usize,
    /// Header maps that refuse mutation (as Envoy does for maps not available in the current
    /// phase, e.g. response headers during the request).
    pub read_only: Vec<HeaderKind>,
}

impl FakeEnvoy {
    pub fn new() -> Self {
        Self::default()
    }

    /// A request with the given headers (names case-insensitive).
    pub fn with_request_headers<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        Self {
            request_headers: HeaderMap::from_pairs(pairs),
            ..Self::default()
        }
    }

    pub fn map(&self, kind: HeaderKind) -> &HeaderMap {
        match kind {
            HeaderKind::RequestHeaders => &self.request_headers,
            HeaderKind::RequestTrailers => &self.request_trailers,
            HeaderKind::ResponseHeaders => &self.response_headers,
            HeaderKind::ResponseTrailers => &self.response_trailers,
        }
    }

    pub fn map_mut(&mut self, kind: HeaderKind) -> &mut HeaderMap {
        match kind {
            HeaderKind::RequestHeaders => &mut self.request_headers,
            HeaderKind::RequestTrailers => &mut self.request_trailers,
            HeaderKind::ResponseHeaders => &mut self.response_headers,
            HeaderKind::ResponseTrailers => &mut self.response_trailers,
        }
    }

    pub fn counter(&self, id: CounterId) -> u64 {
        self.counters.get(&id).copied().unwrap_or(0)
    }

    fn body_ref(&self, direction: Direction) -> &Vec<u8> {
        match direction {
            Direction::Request => &self.request_body,
            Direction::Response => &self.response_body,
        }
    }

    fn writable(&self, kind: HeaderKind) -> bool {
        !self.read_only.contains(&kind)
    }
}

/// One direction's hooks, for the driver.
struct SideHooks {
    direction: Direction,
    headers: Hooks,
    body: Hooks,
    trailers: Hooks,
}

const REQUEST_SIDE: SideHooks = SideHooks {
    direction: Direction::Request,
    headers: Hooks::REQUEST_HEADERS,
    body: Hooks::REQUEST_BODY,
    trailers: Hooks::REQUEST_TRAILERS,
};

const RESPONSE_SIDE: SideHooks = SideHooks {
    direction: Direction::Response,
    headers: Hooks::RESPONSE_HEADERS,
    body: Hooks::RESPONSE_BODY,
    trailers: Hooks::RESPONSE_TRAILERS,
};

impl FakeEnvoy {
    /// Runs a whole request through `filter` as Envoy does when the request arrives in one piece:
    /// the headers hook (end of stream when neither body nor trailers follow), the body in one
    /// chunk (end of stream when no trailers follow), the trailers hook. Only the hooks in
    /// [`HttpFilter::hooks`] are called, asked before each; a hook that stops holds the side back
    /// until a later hook continues it (or the filter calls `continue_request`). Afterwards the
    /// request maps hold what goes upstream. `Err` when the filter stopped the request and never
    /// resumed it (in Envoy, a stream that hangs). The caller creates the filter; Envoy creates
    /// none for a config whose `stream_is_idle` holds, where the filter would do nothing anyway.
    pub fn send_request(
        &mut self,
        filter: &mut dyn HttpFilter,
        request: HttpMessage,
    ) -> Result<Delivery, String> {
        self.request_headers = request.headers;
        self.request_body = request.body;
        self.request_trailers = request.trailers;
        self.run_side(filter, &REQUEST_SIDE)
    }

    /// [`FakeEnvoy::send_request`] for the upstream's response, after the request went upstream:
    /// afterwards the response maps hold what the client receives, unless the filter answered
    /// with a local reply ([`LocalReply::to_client`]). The filter's response hooks are not run
    /// on its own local reply: Envoy calls them while the replying hook is still live, and the
    /// SDK passes such re-entrant calls through.
    pub fn send_response(
        &mut self,
        filter: &mut dyn HttpFilter,
        response: HttpMessage,
    ) -> Result<Delivery, String> {
        self.response_headers = response.headers;
        self.response_body = response.body;
        self.response_trailers = response.trailers;
        self.run_side(filter, &RESPONSE_SIDE)
    }

    fn continued(&self, direction: Direction) -> usize {
        match direction {
            Direction::Request => self.continued_requests,
            Direction::Response => self.continued_responses,
        }
    }

    fn run_side(
        &mut self,
        filter: &mut dyn HttpFilter,
        side: &SideHooks,
    ) -> Result<Delivery, String> {
        let has_body = !self.body_ref(side.direction).is_empty();
        let has_trailers = !self.map(trailers_kind(side.direction)).is_empty();
        let continued_before = self.continued(side.direction);
        // Whether the last hook stopped the side: a hook that continues (or one the SDK answers
        // for the filter, which is Continue) lets go of what earlier hooks held back.
        let end_of_stream = !has_body && !has_trailers;
        let mut held = filter.hooks().contains(side.headers)
            && !matches!(
                match side.direction {
                    Direction::Request => filter.on_request_headers(self, end_of_stream),
                    Direction::Response => filter.on_response_headers(self, end_of_stream),
                },
                HeadersStatus::Continue | HeadersStatus::ContinueAndDontEndStream
            );
        if self.local_reply.is_some() {
            return Ok(Delivery::LocalReply);
        }
        if has_body {
            held = filter.hooks().contains(side.body)
                && match side.direction {
                    Direction::Request => filter.on_request_body(self, !has_trailers),
                    Direction::Response => filter.on_response_body(self, !has_trailers),
                } != BodyStatus::Continue;
            if self.local_reply.is_some() {
                return Ok(Delivery::LocalReply);
            }
        }
        if has_trailers {
            held = filter.hooks().contains(side.trailers)
                && match side.direction {
                    Direction::Request => filter.on_request_trailers(self),
                    Direction::Response => filter.on_response_trailers(self),
                } != TrailersStatus::Continue;
            if self.local_reply.is_some() {
                return Ok(Delivery::LocalReply);
            }
        }
        if held && self.continued(side.direction) == continued_before {
            return Err(format!(
                "the filter stopped the {} at its end and never resumed it",
                match side.direction {
                    Direction::Request => "request",
                    Direction::Response => "response",
                }
            ));
        }
        Ok(Delivery::Forwarded)
    }
}

fn trailers_kind(direction: Direction) -> HeaderKind {
    match direction {
        Direction::Request => HeaderKind::RequestTrailers,
        Direction::Response => HeaderKind::ResponseTrailers,
    }
}

impl EnvoyHttpFilter for FakeEnvoy {
    fn header(&self, kind: HeaderKind, name: &str, index: usize) -> Option<&[u8]> {
        self.map(kind).get(name, index)
    }

    fn header_count(&self, kind: HeaderKind, name: &str) -> usize {
        self.map(kind).count(name)
    }

    fn for_each_header<'a>(&'a self, kind: HeaderKind, f: &mut dyn FnMut(&'a [u8], &'a [u8])) {
        for (name, value) in self.map(kind).iter() {
            f(name.as_bytes(), value);
        }
    }

    fn set_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        if !self.writable(kind) {
            return false;
        }
        self.map_mut(kind).set(name, value);
        true
    }

    fn add_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        if !self.writable(kind) {
            return false;
        }
        self.map_mut(kind).add(name, value);
        true
    }

    /// As Envoy 1.37 and later, so the callers' absent-header path is what unit tests exercise.
    fn add_is_direct(&self) -> bool {
        true
    }

    fn remove_header(&mut self, kind: HeaderKind, name: &str) -> bool {
        if !self.writable(kind) {
            return false;
        }
        self.map_mut(kind).remove(name);
        true
    }

    fn body(&self, direction: Direction) -> Vec<u8> {
        self.body_ref(direction).clone()
    }

    fn body_len(&self, direction: Direction) -> usize {
        self.body_ref(direction).len()
    }

    /// Like the real SDK, also updates a present `content-length` of that direction.
    fn replace_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        let headers = match direction {
            Direction::Request => {
                self.request_body = data.to_vec();
                &mut self.request_headers
            }
            Direction::Response => {
                self.response_body = data.to_vec();
                &mut self.response_headers
            }
        };
        if headers.count("content-length") > 0 {
            headers.set("content-length", data.len().to_string().as_bytes());
        }
        true
    }

    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        if self.local_reply.is_none() {
            self.local_reply = Some(LocalReply {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
                body: body.to_vec(),
                details: details.to_string(),
            });
        }
    }

    fn set_dynamic_metadata_string(&mut self, namespace: &str, key: &str, value: &str) -> bool {
        self.dynamic_metadata_writes.push((
            namespace.to_string(),
            key.to_string(),
            value.to_string(),
        ));
        self.dynamic_metadata
            .insert((namespace.to_string(), key.to_string()), value.to_string());
        true
    }

    fn metadata_string(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<&[u8]> {
        let map = match source {
            MetadataSource::Dynamic => &self.dynamic_metadata,
            other => self.metadata.get(&other)?,
        };
        map.get(&(namespace.to_string(), key.to_string()))
            .map(|v| v.as_bytes())
    }

    fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]> {
        self.string_attributes.get(&attribute).map(Vec::as_slice)
    }

    fn attribute_int(&self, attribute: Attribute) -> Option<i64> {
        self.int_attributes.get(&attribute).copied()
    }

    fn increment_counter(&mut self, counter: CounterId, by: u64) {
        *self.counters.entry(counter).or_insert(0) += by;
    }

    fn per_route_config(&self) -> Option<PerRouteConfig> {
        self.per_route.clone()
    }

    fn continue_request(&mut self) {
        self.continued_requests += 1;
    }

    fn continue_response(&mut self) {
        self.continued_responses += 1;
    }
}

/// An in-memory filter-config side: records defined counters; can be frozen to test failures.
#[derive(Debug, Default)]
pub struct FakeFilterConfigEnvoy {
    /// Counter names in definition order; a counter's id is its index here.
    pub counters: Vec<String>,
    /// When true, defining a counter fails as Envoy does after config load.
    pub frozen: bool,
}

impl FakeFilterConfigEnvoy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of an already defined counter.
    pub fn counter_id(&self, name: &str) -> Option<CounterId> {
        self.counters.iter().position(|c| c == name).map(CounterId)
    }
}

impl EnvoyFilterConfig for FakeFilterConfigEnvoy {
    fn define_counter(&mut self, name: &str) -> Result<CounterId, String> {
        if self.frozen {
            return Err(format!("counter '{name}': stats are frozen"));
        }
        if let Some(id) = self.counter_id(name) {
            return Ok(id);
        }
        self.counters.push(name.to_string());
        Ok(CounterId(self.counters.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn last_header_is_the_last_of_duplicates() {
        let envoy = FakeEnvoy::with_request_headers([("x-a", "1"), ("X-A", "2"), ("x-b", "3")]);
        assert_eq!(
            envoy.last_header(HeaderKind::RequestHeaders, "x-a"),
            Some(&b"2"[..])
        );
        assert_eq!(
            envoy.last_header(HeaderKind::RequestHeaders, "X-B"),
            Some(&b"3"[..])
        );
        assert_eq!(
            envoy.last_header(HeaderKind::RequestHeaders, "x-missing"),
            None
        );
    }

    #[test]
    fn headers_are_case_insensitive_and_multi_valued() {
        let mut e = FakeEnvoy::with_request_headers([("X-A", "1"), ("x-b", "2"), ("x-a", "3")]);
        assert_eq!(
            e.header(HeaderKind::RequestHeaders, "x-a", 0),
            Some(&b"1"[..])
        );
        assert_eq!(
            e.header(HeaderKind::RequestHeaders, "X-A", 1),
            Some(&b"3"[..])
        );
        assert_eq!(e.header(HeaderKind::RequestHeaders, "x-a", 2), None);
        assert_eq!(e.header_count(HeaderKind::RequestHeaders, "X-a"), 2);
        assert!(e.add_header(HeaderKind::RequestHeaders, "X-A", b"4"));
        assert_eq!(e.header_count(HeaderKind::RequestHeaders, "x-a"), 3);
        assert!(e.set_header(HeaderKind::RequestHeaders, "x-A", b"only"));
        assert_eq!(
            e.request_headers.values("x-a").collect::<Vec<_>>(),
            vec![&b"only"[..]]
        );
        // set keeps the position of the first value
        assert_eq!(
            e.headers(HeaderKind::RequestHeaders)[0],
            (&b"x-a"[..], &b"only"[..])
        );
        assert!(e.remove_header(HeaderKind::RequestHeaders, "X-A"));
        assert_eq!(e.header_count(HeaderKind::RequestHeaders, "x-a"), 0);
        assert_eq!(
            e.headers(HeaderKind::RequestHeaders),
            vec![(&b"x-b"[..], &b"2"[..])]
        );
    }

    #[test]
    fn read_only_maps_refuse_mutation() {
        let mut e = FakeEnvoy::new();
        e.read_only.push(HeaderKind::ResponseHeaders);
        assert!(!e.set_header(HeaderKind::ResponseHeaders, "a", b"b"));
        assert!(!e.add_header(HeaderKind::ResponseHeaders, "a", b"b"));
        assert!(!e.remove_header(HeaderKind::ResponseHeaders, "a"));
        assert!(e.response_headers.is_empty());
    }

    #[test]
    fn bodies_replace_and_update_content_length() {
        let mut e = FakeEnvoy::with_request_headers([("content-length", "3")]);
        e.request_body = b"abc".to_vec();
        assert_eq!(e.body(Direction::Request), b"abc");
        assert_eq!(e.body_len(Direction::Request), 3);
        assert!(e.replace_body(Direction::Request, b"hello"));
        assert_eq!(e.request_body, b"hello");
        assert_eq!(
            e.request_headers.get_str("content-length").as_deref(),
            Some("5")
        );
        // no content-length: none is invented
        assert!(e.replace_body(Direction::Response, b"xy"));
        assert_eq!(e.response_body, b"xy");
        assert_eq!(e.response_headers.count("content-length"), 0);
    }

    #[test]
    fn local_reply_records_the_first() {
        let mut e = FakeEnvoy::new();
        e.send_local_reply(403, &[("x-why", b"acl")], b"denied", "acl_denied");
        e.send_local_reply(500, &[], b"", "later");
        let r = e.local_reply.as_ref().unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.headers, vec![("x-why".to_string(), b"acl".to_vec())]);
        assert_eq!(r.body, b"denied");
        assert_eq!(r.details, "acl_denied");
    }

    #[test]
    fn metadata_attributes_counters_route_config() {
        let mut e = FakeEnvoy::new();
        assert!(e.set_dynamic_metadata_string("ns", "k", "v"));
        assert_eq!(e.dynamic_metadata_string("ns", "k"), Some(&b"v"[..]));
        assert_eq!(e.dynamic_metadata_string("ns", "other"), None);
        assert_eq!(
            e.metadata_string(MetadataSource::Dynamic, "ns", "k"),
            Some(&b"v"[..]),
            "dynamic metadata is the Dynamic source"
        );
        assert_eq!(e.metadata_string(MetadataSource::Route, "ns", "k"), None);
        e.metadata.entry(MetadataSource::Route).or_default().insert(
            ("team".to_string(), "owner".to_string()),
            "payments".to_string(),
        );
        assert_eq!(
            e.metadata_string(MetadataSource::Route, "team", "owner"),
            Some(&b"payments"[..])
        );
        assert_eq!(
            e.metadata_string(MetadataSource::Cluster, "team", "owner"),
            None
        );

        e.string_attributes
            .insert(Attribute::SourceAddress, b"10.0.0.1:1234".to_vec());
        e.int_attributes.insert(Attribute::ResponseCode, 200);
        assert_eq!(
            e.attribute_string(Attribute::SourceAddress),
            Some(&b"10.0.0.1:1234"[..])
        );
        assert_eq!(e.attribute_string(Attribute::RequestProtocol), None);
        assert_eq!(e.attribute_int(Attribute::ResponseCode), Some(200));

        let mut cfg = FakeFilterConfigEnvoy::new();
        let a = cfg.define_counter("a").unwrap();
        let b = cfg.define_counter("b").unwrap();
        assert_eq!(cfg.define_counter("a").unwrap(), a);
        e.increment_counter(a, 2);
        e.increment_counter(a, 1);
        assert_eq!(e.counter(a), 3);
        assert_eq!(e.counter(b), 0);
        cfg.frozen = true;
        assert!(cfg.define_counter("c").is_err());

        assert!(e.per_route_config().is_none());
        e.per_route = Some(Arc::new(42u32));
        let got = e.per_route_config().unwrap();
        assert_eq!(got.downcast_ref::<u32>(), Some(&42));

        e.continue_request();
        e.continue_response();
        assert_eq!((e.continued_requests, e.continued_responses), (1, 1));
    }

    /// Holds the headers and the body back until end of stream, then wraps the body; answers
    /// 403 to a request carrying `x-deny`; calls nothing outside `hooks`.
    struct Wrapper {
        hooks: Hooks,
        calls: Vec<&'static str>,
    }

    impl HttpFilter for Wrapper {
        fn on_request_headers(
            &mut self,
            envoy: &mut dyn EnvoyHttpFilter,
            end_of_stream: bool,
        ) -> HeadersStatus {
            self.calls.push("request headers");
            if envoy.header_count(HeaderKind::RequestHeaders, "x-deny") > 0 {
                envoy.send_local_reply(403, &[("x-why", b"deny")], b"", "denied");
                return HeadersStatus::StopIteration;
            }
            if end_of_stream {
                HeadersStatus::Continue
            } else {
                HeadersStatus::StopIteration
            }
        }
        fn on_request_body(
            &mut self,
            envoy: &mut dyn EnvoyHttpFilter,
            end_of_stream: bool,
        ) -> BodyStatus {
            self.calls.push("request body");
            if !end_of_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            let wrapped = [b"[".as_slice(), &envoy.body(Direction::Request), b"]"].concat();
            envoy.replace_body(Direction::Request, &wrapped);
            BodyStatus::Continue
        }
        fn on_request_trailers(&mut self, _envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
            self.calls.push("request trailers");
            TrailersStatus::Continue
        }
        fn on_response_headers(
            &mut self,
            envoy: &mut dyn EnvoyHttpFilter,
            _end_of_stream: bool,
        ) -> HeadersStatus {
            self.calls.push("response headers");
            envoy.set_header(HeaderKind::ResponseHeaders, "x-seen", b"yes");
            HeadersStatus::Continue
        }
        fn hooks(&self) -> Hooks {
            self.hooks
        }
    }

    fn request(headers: &[(&str, &str)], body: &str, trailers: &[(&str, &str)]) -> HttpMessage {
        HttpMessage {
            headers: HeaderMap::from_pairs(headers.iter().copied()),
            body: body.as_bytes().to_vec(),
            trailers: HeaderMap::from_pairs(trailers.iter().copied()),
        }
    }

    #[test]
    fn a_whole_request_runs_the_hooks_in_order_and_what_goes_upstream_is_kept() {
        let mut filter = Wrapper {
            hooks: Hooks::ALL,
            calls: Vec::new(),
        };
        let mut e = FakeEnvoy::new();
        let sent = request(&[(":path", "/"), ("content-length", "2")], "ab", &[]);
        assert_eq!(e.send_request(&mut filter, sent), Ok(Delivery::Forwarded));
        assert_eq!(filter.calls, ["request headers", "request body"]);
        assert_eq!(e.request_body, b"[ab]");
        assert_eq!(
            e.request_headers.get_str("content-length").as_deref(),
            Some("4")
        );
        let response = request(&[(":status", "200")], "", &[]);
        assert_eq!(
            e.send_response(&mut filter, response),
            Ok(Delivery::Forwarded)
        );
        assert_eq!(e.response_headers.get_str("x-seen").as_deref(), Some("yes"));

        // Trailers end the body: it is not at end of stream, so it stays buffered until the
        // trailers hook continues.
        let mut filter = Wrapper {
            hooks: Hooks::ALL,
            calls: Vec::new(),
        };
        let mut e = FakeEnvoy::new();
        let sent = request(&[(":path", "/")], "ab", &[("x-t", "1")]);
        assert_eq!(e.send_request(&mut filter, sent), Ok(Delivery::Forwarded));
        assert_eq!(
            filter.calls,
            ["request headers", "request body", "request trailers"]
        );
        assert_eq!(e.request_body, b"ab");
        assert_eq!(e.request_trailers.get_str("x-t").as_deref(), Some("1"));
    }

    #[test]
    fn hooks_outside_the_filters_set_are_not_called_and_let_the_side_go() {
        let mut filter = Wrapper {
            hooks: Hooks::REQUEST_HEADERS,
            calls: Vec::new(),
        };
        let mut e = FakeEnvoy::new();
        let sent = request(&[(":path", "/")], "ab", &[]);
        assert_eq!(e.send_request(&mut filter, sent), Ok(Delivery::Forwarded));
        assert_eq!(filter.calls, ["request headers"]);
        assert_eq!(e.request_body, b"ab");
        let response = request(&[(":status", "200")], "", &[]);
        assert_eq!(
            e.send_response(&mut filter, response),
            Ok(Delivery::Forwarded)
        );
        assert_eq!(e.response_headers.get_str("x-seen"), None);
    }

    #[test]
    fn a_local_reply_ends_the_side_and_reaches_the_client_as_envoy_sends_it() {
        let mut filter = Wrapper {
            hooks: Hooks::ALL,
            calls: Vec::new(),
        };
        let mut e = FakeEnvoy::new();
        let sent = request(&[(":path", "/"), ("x-deny", "1")], "ab", &[]);
        assert_eq!(e.send_request(&mut filter, sent), Ok(Delivery::LocalReply));
        assert_eq!(filter.calls, ["request headers"]);
        let client = e.local_reply.as_ref().unwrap().to_client();
        assert_eq!(
            client.headers.iter().collect::<Vec<_>>(),
            [
                (":status", &b"403"[..]),
                ("x-why", b"deny"),
                ("content-length", b"0")
            ]
        );
        let with_body = LocalReply {
            status: 413,
            headers: Vec::new(),
            body: b"too large".to_vec(),
            details: "big".into(),
        };
        let client = with_body.to_client();
        assert_eq!(
            client.headers.get_str("content-length").as_deref(),
            Some("9")
        );
        assert_eq!(
            client.headers.get_str("content-type").as_deref(),
            Some("text/plain")
        );
    }

    #[test]
    fn a_side_stopped_at_its_end_and_never_resumed_is_an_error() {
        let mut filter = Wrapper {
            hooks: Hooks::REQUEST_HEADERS,
            calls: Vec::new(),
        };
        let mut e = FakeEnvoy::new();
        // Headers stop (a body follows) and the trailers hook, answered by the SDK, continues.
        let sent = request(&[(":path", "/")], "ab", &[("x-t", "1")]);
        assert_eq!(e.send_request(&mut filter, sent), Ok(Delivery::Forwarded));

        struct Stopper;
        impl HttpFilter for Stopper {
            fn on_request_headers(
                &mut self,
                _envoy: &mut dyn EnvoyHttpFilter,
                _end_of_stream: bool,
            ) -> HeadersStatus {
                HeadersStatus::StopIteration
            }
        }
        let mut e = FakeEnvoy::new();
        let err = e
            .send_request(&mut Stopper, request(&[(":path", "/")], "", &[]))
            .unwrap_err();
        assert_eq!(
            err,
            "the filter stopped the request at its end and never resumed it"
        );
    }

    #[test]
    fn dynamic_metadata_writes_are_kept_in_order() {
        let mut e = FakeEnvoy::new();
        e.dynamic_metadata
            .insert(("ns".into(), "given".into()), "before".into());
        e.set_dynamic_metadata_string("ns", "b", "2");
        e.set_dynamic_metadata_string("ns", "a", "1");
        assert_eq!(
            e.dynamic_metadata_writes,
            [
                ("ns".to_string(), "b".to_string(), "2".to_string()),
                ("ns".to_string(), "a".to_string(), "1".to_string())
            ]
        );
        assert_eq!(e.dynamic_metadata.len(), 3);
    }
}
