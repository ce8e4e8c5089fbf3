//! The safe surface of the SDK: what a filter sees of Envoy, and what Envoy sees of a filter.
//!
//! Nothing here touches raw pointers. Each API family implements [`EnvoyHttpFilter`] and
//! [`EnvoyFilterConfig`] over Envoy's C ABI (`abi_1_36::FfiFilter` for Envoy 1.36,
//! `abi_1_37::FfiFilter` for 1.37 and later, both the generic `abi::FfiFilter` over that family's
//! callback table); `testing::FakeEnvoy` (the `testing` feature) implements them in memory so
//! filters are unit-tested without Envoy.

use std::any::Any;
use std::sync::Arc;

/// Which header map a header operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderKind {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

/// Which direction a body operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

/// Answer of a headers callback (values are Envoy's `FilterHeadersStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    Continue = 0,
    StopIteration = 1,
    ContinueAndDontEndStream = 2,
    StopAllIterationAndBuffer = 3,
    StopAllIterationAndWatermark = 4,
}

/// Answer of a body callback (values are Envoy's `FilterDataStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStatus {
    Continue = 0,
    StopIterationAndBuffer = 1,
    StopIterationAndWatermark = 2,
    StopIterationNoBuffer = 3,
}

/// Answer of a trailers callback (values are Envoy's `FilterTrailersStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailersStatus {
    Continue = 0,
    StopIteration = 1,
}

/// Envoy's log levels, in Envoy's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Stream attributes a filter may read (a subset of Envoy's attribute ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// `source.address`: the downstream remote address (`ip:port`), XFF-derived when the
    /// connection manager is configured so.
    SourceAddress,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`, ...
    RequestProtocol,
    /// `request.time`: the request start time.
    RequestTime,
    /// `response.code`.
    ResponseCode,
}

/// Where a metadata read looks (values are Envoy's metadata source ids, the same in every
/// supported API family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetadataSource {
    /// The stream's dynamic metadata, as set by filters.
    Dynamic = 0,
    /// The selected route's `metadata`.
    Route = 1,
    /// The upstream cluster's `metadata`.
    Cluster = 2,
    /// The upstream host's (LbEndpoint's) `metadata`.
    Host = 3,
}

/// A counter defined at config time; cheap to copy into filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterId(pub usize);

/// A per-route config as Envoy hands it back to a filter: whatever the module's per-route factory
/// built, shared for as long as any stream uses it.
pub type PerRouteConfig = Arc<dyn Any + Send + Sync>;

/// What a filter may do to and ask of Envoy, for one HTTP stream.
pub trait EnvoyHttpFilter {
    /// The `index`-th value of header `name` (names are case-insensitive), borrowed until the next
    /// mutation of the stream.
    fn header(&self, kind: HeaderKind, name: &str, index: usize) -> Option<&[u8]>;
    /// How many values header `name` has.
    fn header_count(&self, kind: HeaderKind, name: &str) -> usize;
    /// The last value of header `name` (with duplicate names, the last one wins).
    fn last_header(&self, kind: HeaderKind, name: &str) -> Option<&[u8]> {
        let last = self.header_count(kind, name).checked_sub(1)?;
        self.header(kind, name, last)
    }
    /// Every header as (name, value), in Envoy's order.
    fn headers(&self, kind: HeaderKind) -> Vec<(&[u8], &[u8])> {
        let mut all = Vec::new();
        self.for_each_header(kind, &mut |name, value| all.push((name, value)));
        all
    }
    /// Calls `f` with every header as (name, value), in Envoy's order: one call into Envoy, and
    /// no allocation for a map of up to 32 headers.
    fn for_each_header<'a>(&'a self, kind: HeaderKind, f: &mut dyn FnMut(&'a [u8], &'a [u8]));
    /// [`EnvoyHttpFilter::for_each_header`] for the names only, and of those only the names whose
    /// length `n` is below 64 with bit `n` of `lengths` set: a filter looking for a few names is
    /// not called for the others.
    fn for_each_header_name_of_lengths<'a>(
        &'a self,
        kind: HeaderKind,
        lengths: u64,
        f: &mut dyn FnMut(&'a [u8]),
    ) {
        self.for_each_header(kind, &mut |name, _| {
            if name.len() < 64 && lengths & (1 << name.len()) != 0 {
                f(name);
            }
        });
    }
    /// Replace all values of `name` with one value. Returns false if Envoy refused.
    fn set_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool;
    /// Append a value to `name`, keeping existing values.
    fn add_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool;
    /// Whether [`EnvoyHttpFilter::add_header`] is one call into Envoy (1.37 and later). Envoy's
    /// `set_header` searches the map to remove the old values before it adds, so adding a header
    /// known to be absent is cheaper; 1.36 has no add call, and there `add_header` reads the
    /// existing values and sets them all.
    fn add_is_direct(&self) -> bool {
        false
    }
    /// Remove every value of `name`.
    fn remove_header(&mut self, kind: HeaderKind, name: &str) -> bool;

    /// The whole body seen so far in `direction` (what Envoy buffered plus the current chunk).
    fn body(&self, direction: Direction) -> Vec<u8>;
    /// Length of [`EnvoyHttpFilter::body`] without copying it.
    fn body_len(&self, direction: Direction) -> usize;
    /// Replace the whole body of `direction` (buffered and current chunk) with `data`.
    /// Valid in the body callback at end of stream, or in the headers callback at end of stream
    /// (which creates a body on a body-less message).
    fn replace_body(&mut self, direction: Direction, data: &[u8]) -> bool;

    /// Answer the request locally. Headers are sent in order.
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    );

    /// Set `namespace/key` of the stream's dynamic metadata to a string.
    fn set_dynamic_metadata_string(&mut self, namespace: &str, key: &str, value: &str) -> bool;
    /// Read a string from the stream's dynamic metadata.
    fn dynamic_metadata_string(&self, namespace: &str, key: &str) -> Option<&[u8]> {
        self.metadata_string(MetadataSource::Dynamic, namespace, key)
    }
    /// Read the string value of `namespace/key` from `source`; `None` when the source, the
    /// namespace or the key is absent, or the value is not a string.
    fn metadata_string(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<&[u8]>;

    /// A string attribute of the stream.
    fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]>;
    /// An integer attribute of the stream.
    fn attribute_int(&self, attribute: Attribute) -> Option<i64>;

    /// Add `by` to a counter defined at config time.
    fn increment_counter(&mut self, counter: CounterId, by: u64);

    /// The most specific per-route config for this stream, if the route carries one.
    fn per_route_config(&self) -> Option<PerRouteConfig>;

    /// Resume a request that a callback stopped.
    fn continue_request(&mut self);
    /// Resume a response that a callback stopped.
    fn continue_response(&mut self);
}

/// What a filter config may ask of Envoy while it is being created.
pub trait EnvoyFilterConfig {
    /// Define a counter; only possible while the config is created.
    fn define_counter(&mut self, name: &str) -> Result<CounterId, String>;
}

/// Creates one filter per HTTP stream. Built once per filter config, shared across worker threads.
pub trait HttpFilterConfig: Send + Sync {
    fn new_filter(&self) -> Box<dyn HttpFilter>;

    /// The stream's filter, built into the SDK's own allocation for the stream with
    /// [`NewFilter::new`]: one allocation a stream instead of two. The default boxes
    /// [`HttpFilterConfig::new_filter`]; once a config overrides this, the SDK no longer calls
    /// its `new_filter`.
    fn new_stream_filter(&self) -> NewFilter {
        NewFilter::new(self.new_filter())
    }

    /// Whether a stream starting now has nothing to do in any hook. Asked when Envoy creates
    /// each stream; when true, no filter is created and every hook of the stream passes at once
    /// (Continue), which is what a dynamic-module filter with no work can cost at the least.
    fn stream_is_idle(&self) -> bool {
        false
    }
}

pub use crate::runtime::NewFilter;

/// A boxed filter is a filter ([`HttpFilterConfig::new_stream_filter`]'s default stores the box).
impl<F: HttpFilter + ?Sized> HttpFilter for Box<F> {
    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        (**self).on_request_headers(envoy, end_of_stream)
    }
    fn on_request_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        (**self).on_request_body(envoy, end_of_stream)
    }
    fn on_request_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        (**self).on_request_trailers(envoy)
    }
    fn on_response_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        (**self).on_response_headers(envoy, end_of_stream)
    }
    fn on_response_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        (**self).on_response_body(envoy, end_of_stream)
    }
    fn on_response_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        (**self).on_response_trailers(envoy)
    }
    fn on_stream_complete(&mut self, envoy: &mut dyn EnvoyHttpFilter) {
        (**self).on_stream_complete(envoy)
    }
    fn hooks(&self) -> Hooks {
        (**self).hooks()
    }
}

/// A set of per-stream hooks: what [`HttpFilter::hooks`] still needs to be called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    pub const NONE: Hooks = Hooks(0);
    pub const REQUEST_HEADERS: Hooks = Hooks(1);
    pub const REQUEST_BODY: Hooks = Hooks(1 << 1);
    pub const REQUEST_TRAILERS: Hooks = Hooks(1 << 2);
    pub const RESPONSE_HEADERS: Hooks = Hooks(1 << 3);
    pub const RESPONSE_BODY: Hooks = Hooks(1 << 4);
    pub const RESPONSE_TRAILERS: Hooks = Hooks(1 << 5);
    pub const STREAM_COMPLETE: Hooks = Hooks(1 << 6);
    pub const ALL: Hooks = Hooks((1 << 7) - 1);

    pub const fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) const fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, other: Hooks) -> Hooks {
        self.union(other)
    }
}

/// Per-stream filter callbacks. Every method has a pass-through default.
#[allow(unused_variables)]
pub trait HttpFilter {
    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn on_request_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_request_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        TrailersStatus::Continue
    }
    fn on_response_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        HeadersStatus::Continue
    }
    fn on_response_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        BodyStatus::Continue
    }
    fn on_response_trailers(&mut self, envoy: &mut dyn EnvoyHttpFilter) -> TrailersStatus {
        TrailersStatus::Continue
    }
    fn on_stream_complete(&mut self, envoy: &mut dyn EnvoyHttpFilter) {}

    /// The hooks this filter still has work in. Asked once the filter is created and after each
    /// hook it ran; a hook outside the set is answered as its default above (Continue) without
    /// reaching the filter. Every hook must still behave correctly when called anyway (unit
    /// tests call them directly).
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }
}

/// Builds a filter config from `(filter_name, config bytes)`.
pub type NewFilterConfigFn = fn(
    envoy: &mut dyn EnvoyFilterConfig,
    filter_name: &str,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String>;

/// Builds a per-route config from `(config name, config bytes)`.
pub type NewPerRouteConfigFn = fn(name: &str, config: &[u8]) -> Result<PerRouteConfig, String>;

/// The module's entry points, registered once with [`crate::declare_module!`].
pub struct Module {
    /// Build a filter config from `(filter_name, config bytes)`; an `Err` rejects the config and is
    /// logged by the SDK with the filter name.
    pub new_filter_config: NewFilterConfigFn,
    /// Build a per-route config from `(config name, config bytes)`; an `Err` rejects it. The name
    /// is the route's `per_route_config_name` (Envoy 1.36 to 1.39) or `filter_name` (1.40).
    pub new_per_route_config: NewPerRouteConfigFn,
}
