//! In-memory [`Message`] and [`StreamInfo`]: for tests, benchmarks and the command-line tool.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::message::{HeaderMap, Message, MetadataSource, StreamInfo};

/// Headers (in order, duplicates allowed) and a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryMessage {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl MemoryMessage {
    pub fn new(headers: &[(&str, &str)], body: &str) -> MemoryMessage {
        MemoryMessage {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// Every value of `name`, as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The last value of `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.values(name).pop()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl HeaderMap for MemoryMessage {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_slice()))
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (n, v) in &self.headers {
            f(n.as_bytes(), v);
        }
    }

    fn set(&mut self, name: &str, value: &[u8]) {
        match self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                self.headers[first].1 = value.to_vec();
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || !n.eq_ignore_ascii_case(name)
                });
            }
            None => self.headers.push((name.to_owned(), value.to_vec())),
        }
    }

    fn add(&mut self, name: &str, value: &[u8]) {
        self.headers.push((name.to_owned(), value.to_vec()));
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl Message for MemoryMessage {
    fn body(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.body)
    }

    fn set_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
    }
}

/// Stream information and the dynamic metadata that was set.
#[derive(Debug, Clone, Default)]
pub struct MemoryStreamInfo {
    pub protocol: Option<String>,
    pub start_time: Option<SystemTime>,
    pub downstream_remote_address: Option<SocketAddr>,
    /// `(namespace, key, value)` in the order they were set.
    pub dynamic_metadata: Vec<(String, String, String)>,
    /// String metadata other filters set, what `metadata()` reads, by (source, namespace, key).
    pub metadata: HashMap<(MetadataSource, String, String), String>,
    /// How many times [`StreamInfo::metadata`] was asked.
    pub metadata_reads: Cell<usize>,
}

impl MemoryStreamInfo {
    /// Adds a metadata value for `metadata()` to read.
    pub fn with_metadata(
        mut self,
        source: MetadataSource,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> MemoryStreamInfo {
        self.metadata.insert(
            (source, namespace.to_owned(), key.to_owned()),
            value.to_owned(),
        );
        self
    }
}

impl StreamInfo for MemoryStreamInfo {
    fn protocol(&self) -> Option<Cow<'_, str>> {
        self.protocol.as_deref().map(Cow::Borrowed)
    }
    fn start_time(&self) -> Option<SystemTime> {
        self.start_time
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        self.downstream_remote_address
    }
    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str) {
        self.dynamic_metadata
            .push((namespace.to_owned(), key.to_owned(), value.to_owned()));
    }
    fn metadata(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<String> {
        self.metadata_reads.set(self.metadata_reads.get() + 1);
        self.metadata
            .get(&(source, namespace.to_owned(), key.to_owned()))
            .cloned()
    }
}
