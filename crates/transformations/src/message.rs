//! What a transformation reads and writes, as traits the Envoy glue (and the in-memory
//! [`crate::memory`] types) implement: [`HeaderMap`], [`Message`], [`StreamInfo`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::SystemTime;

/// A header map. Names are matched case-insensitively.
pub trait HeaderMap {
    /// The last value of `name`, if any.
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>>;
    /// Lends the last value of `name` to `f`; false when absent. Snapshots read through this, so
    /// a map that can lend its value avoids a copy.
    fn with_last(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        match self.get(name) {
            Some(v) => {
                f(&v);
                true
            }
            None => false,
        }
    }
    /// [`HeaderMap::with_last`] as text, invalid UTF-8 replaced. A map that knows a cheaper check
    /// for the usual ASCII value overrides it.
    fn with_last_str(&self, name: &str, f: &mut dyn FnMut(&str)) -> bool {
        self.with_last(name, &mut |v| match std::str::from_utf8(v) {
            Ok(v) => f(v),
            Err(_) => f(&String::from_utf8_lossy(v)),
        })
    }
    /// Lends every value of `name` to `f`, in order; false when absent. A map that can look a
    /// name up directly overrides it.
    fn with_each(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        let mut found = false;
        self.for_each(&mut |n, v| {
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                found = true;
                f(v);
            }
        });
        found
    }
    /// Every header, in order (duplicates included).
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]));
    /// The names of [`HeaderMap::for_each`] whose length `n` is below 64 with bit `n` of
    /// `lengths` set; a map that can pass over the others without a call overrides it.
    fn for_each_name_of_lengths(&self, lengths: u64, f: &mut dyn FnMut(&[u8])) {
        self.for_each(&mut |name, _| {
            if name.len() < 64 && lengths & (1 << name.len()) != 0 {
                f(name);
            }
        });
    }
    /// Replaces every value of `name` by `value`.
    fn set(&mut self, name: &str, value: &[u8]);
    /// Appends a value.
    fn add(&mut self, name: &str, value: &[u8]);
    /// Whether adding a header that is absent costs less than setting it. Then a side reads the
    /// map's names once, and adds the headers it sets that are not there (Envoy's set searches
    /// the whole map to remove before it adds).
    fn adds_absent_cheaper(&self) -> bool {
        false
    }
    /// Removes every value of `name`.
    fn remove(&mut self, name: &str);
}

/// A request or a response: headers plus the whole (buffered) body.
pub trait Message: HeaderMap {
    fn body(&self) -> Cow<'_, [u8]>;
    /// Replaces the whole body.
    fn set_body(&mut self, body: &[u8]);
}

/// The stream around the message, for command operators, plus the dynamic-metadata sink.
/// Only what a transformation uses is asked for.
pub trait StreamInfo {
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` or `HTTP/3`.
    fn protocol(&self) -> Option<Cow<'_, str>> {
        None
    }
    fn start_time(&self) -> Option<SystemTime> {
        None
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        None
    }
    /// Sets string dynamic metadata `namespace/key`.
    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str);
    /// A string value of metadata `namespace/key` from `source` (what `metadata()` reads);
    /// `None` when absent or not a string. Asked only for the pairs the templates name, once
    /// per side application.
    fn metadata(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<String> {
        let _ = (source, namespace, key);
        None
    }
}

/// Where `metadata(namespace, key, source)` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataSource {
    /// The stream's dynamic metadata (set by filters: `header_to_metadata`, `ext_authz`, ...).
    Dynamic,
    /// The route's `metadata`.
    Route,
    /// The upstream cluster's `metadata` (once the route picked a cluster).
    Cluster,
    /// The upstream host's `metadata` (response side: once a host was picked).
    Host,
}

impl MetadataSource {
    /// `dynamic`, `route`, `cluster` or `host`.
    pub fn from_name(name: &str) -> Option<MetadataSource> {
        Some(match name {
            "dynamic" => MetadataSource::Dynamic,
            "route" => MetadataSource::Route,
            "cluster" => MetadataSource::Cluster,
            "host" => MetadataSource::Host,
            _ => return None,
        })
    }
}

/// One metadata value a template reads: decided at load time from the call's literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataKey {
    pub source: MetadataSource,
    pub namespace: String,
    pub key: String,
}
