//! What compiled values read at render time (`Usage`), and which headers ([`HeaderNeeds`]):
//! decided at load, so a side snapshots, buffers and parses only what its values can read.

use std::collections::BTreeSet;

use crate::operators::{Operator, OperatorKind};

/// Which headers some values read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderNeeds {
    all: bool,
    /// Sorted and unique; a list rather than a set because it is scanned per request.
    names: Vec<String>,
}

impl HeaderNeeds {
    /// Every header is needed (a header function was called with a computed name).
    pub fn all(&self) -> bool {
        self.all
    }

    /// Lowercased names needed (meaningless when [`all`](Self::all) is true).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty()
    }

    /// How many names are needed (a capacity hint; 0 when [`all`](Self::all) is true).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn add(&mut self, name: &str) {
        if !self.all {
            let name = name.to_ascii_lowercase();
            if let Err(at) = self.names.binary_search(&name) {
                self.names.insert(at, name);
            }
        }
    }

    /// Gives back the room the list grew into (a config keeps it for its life).
    pub(crate) fn shrink(&mut self) {
        self.names.shrink_to_fit();
    }

    pub(crate) fn set_all(&mut self) {
        self.all = true;
        self.names.clear();
    }

    pub(crate) fn merge(&mut self, other: &HeaderNeeds) {
        if other.all {
            self.set_all();
        } else if !self.all {
            // The other list is lowercased already: copy only the names this one lacks.
            for n in &other.names {
                if let Err(at) = self.names.binary_search(n) {
                    self.names.insert(at, n.clone());
                }
            }
        }
    }
}

/// What a set of values reads at render time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    /// `header(name)`.
    pub header_fn: HeaderNeeds,
    /// `request_header(name)`.
    pub request_header_fn: HeaderNeeds,
    /// `%REQ(name)%`.
    pub req_op: HeaderNeeds,
    /// `%RESP(name)%`.
    pub resp_op: HeaderNeeds,
    /// `body()` or `context()`.
    pub body: bool,
    /// Whether something may read the JSON body as a whole (`context()`, `debug()`, another
    /// template pulled in): then the whole body is converted, not only the named keys.
    pub whole_json: bool,
    /// Every top-level name the templates look up: the only JSON keys they can read.
    pub json_names: BTreeSet<String>,
    pub protocol: bool,
    pub start_time: bool,
    pub remote_address: bool,
    /// `metadata(...)` calls: indices into the config's metadata table.
    pub metadata: BTreeSet<usize>,
}

impl Usage {
    /// Drops what this side cannot use and the spare room of what it keeps: a compiled side
    /// lives as long as its config, on every route that has it.
    pub(crate) fn shrink(&mut self, parses_json: bool) {
        if !parses_json {
            // Read only to parse a JSON body (`parseAs: AsJson`).
            self.json_names = BTreeSet::new();
        }
        for needs in [
            &mut self.header_fn,
            &mut self.request_header_fn,
            &mut self.req_op,
            &mut self.resp_op,
        ] {
            needs.shrink();
        }
    }

    /// Adds what `other` reads.
    pub(crate) fn merge(&mut self, other: &Usage) {
        self.header_fn.merge(&other.header_fn);
        self.request_header_fn.merge(&other.request_header_fn);
        self.req_op.merge(&other.req_op);
        self.resp_op.merge(&other.resp_op);
        self.body |= other.body;
        self.whole_json |= other.whole_json;
        for name in &other.json_names {
            if !self.json_names.contains(name) {
                self.json_names.insert(name.clone());
            }
        }
        self.protocol |= other.protocol;
        self.start_time |= other.start_time;
        self.remote_address |= other.remote_address;
        self.metadata.extend(other.metadata.iter().copied());
    }

    pub(crate) fn record_op(&mut self, op: &Operator) {
        match &op.kind {
            OperatorKind::Req { name, alt } => {
                self.req_op.add(name);
                if let Some(a) = alt {
                    self.req_op.add(a);
                }
            }
            OperatorKind::Resp { name, alt } => {
                self.resp_op.add(name);
                if let Some(a) = alt {
                    self.resp_op.add(a);
                }
            }
            OperatorKind::Protocol => self.protocol = true,
            OperatorKind::StartTime => self.start_time = true,
            OperatorKind::DownstreamRemoteAddress
            | OperatorKind::DownstreamRemoteAddressWithoutPort => self.remote_address = true,
        }
    }
}
