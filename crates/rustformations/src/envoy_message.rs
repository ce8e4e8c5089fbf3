//! The `transformations` traits implemented over one direction of an Envoy stream.
//!
//! `apply_request`/`apply_response` take the message and the stream info as two `&mut`
//! arguments while both live in the one Envoy stream, so both views share it through a
//! `RefCell`. Values are copied out, which the transformation does anyway when it snapshots
//! the few headers its templates name.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::SystemTime;

use envoy_module::{Attribute, Direction, EnvoyHttpFilter, HeaderKind};
use transformations::{HeaderMap, Message, MetadataSource, StreamInfo};

pub type SharedEnvoy<'a, 'e> = &'a RefCell<&'e mut dyn EnvoyHttpFilter>;

/// The headers and body of one direction of the stream.
pub struct EnvoyMessage<'a, 'e> {
    pub envoy: SharedEnvoy<'a, 'e>,
    pub direction: Direction,
}

impl EnvoyMessage<'_, '_> {
    fn kind(&self) -> HeaderKind {
        match self.direction {
            Direction::Request => HeaderKind::RequestHeaders,
            Direction::Response => HeaderKind::ResponseHeaders,
        }
    }
}

impl HeaderMap for EnvoyMessage<'_, '_> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let envoy = self.envoy.borrow();
        envoy
            .last_header(self.kind(), name)
            .map(|v| Cow::Owned(v.to_vec()))
    }

    fn with_last(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        // Straight from Envoy's buffer into the snapshot: no intermediate copy.
        let envoy = self.envoy.borrow();
        match envoy.last_header(self.kind(), name) {
            Some(v) => {
                f(v);
                true
            }
            None => false,
        }
    }

    fn with_last_str(&self, name: &str, f: &mut dyn FnMut(&str)) -> bool {
        let envoy = self.envoy.borrow();
        let Some(v) = envoy.last_header(self.kind(), name) else {
            return false;
        };
        match envoy_module::ascii_str(v) {
            Some(v) => f(v),
            None => f(&String::from_utf8_lossy(v)),
        }
        true
    }

    fn with_each(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        // Each value straight from Envoy's buffer, looked up by name and index.
        let envoy = self.envoy.borrow();
        let count = envoy.header_count(self.kind(), name);
        for index in 0..count {
            if let Some(v) = envoy.header(self.kind(), name, index) {
                f(v);
            }
        }
        count > 0
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        self.envoy.borrow().for_each_header(self.kind(), f);
    }

    fn for_each_name_of_lengths(&self, lengths: u64, f: &mut dyn FnMut(&[u8])) {
        self.envoy
            .borrow()
            .for_each_header_name_of_lengths(self.kind(), lengths, f);
    }

    fn set(&mut self, name: &str, value: &[u8]) {
        self.envoy.borrow_mut().set_header(self.kind(), name, value);
    }

    fn add(&mut self, name: &str, value: &[u8]) {
        self.envoy.borrow_mut().add_header(self.kind(), name, value);
    }

    fn remove(&mut self, name: &str) {
        self.envoy.borrow_mut().remove_header(self.kind(), name);
    }

    fn adds_absent_cheaper(&self) -> bool {
        self.envoy.borrow().add_is_direct()
    }
}

impl Message for EnvoyMessage<'_, '_> {
    fn body(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.envoy.borrow().body(self.direction))
    }

    fn set_body(&mut self, body: &[u8]) {
        self.envoy.borrow_mut().replace_body(self.direction, body);
    }
}

/// Stream facts for command operators, read from Envoy only when an operator asks; dynamic
/// metadata is written straight through.
pub struct EnvoyStreamInfo<'a, 'e> {
    pub envoy: SharedEnvoy<'a, 'e>,
    pub start_time: SystemTime,
}

impl StreamInfo for EnvoyStreamInfo<'_, '_> {
    fn protocol(&self) -> Option<Cow<'_, str>> {
        let envoy = self.envoy.borrow();
        let bytes = envoy.attribute_string(Attribute::RequestProtocol)?;
        Some(Cow::Owned(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn start_time(&self) -> Option<SystemTime> {
        Some(self.start_time)
    }

    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        let envoy = self.envoy.borrow();
        std::str::from_utf8(envoy.attribute_string(Attribute::SourceAddress)?)
            .ok()?
            .parse()
            .ok()
    }

    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str) {
        self.envoy
            .borrow_mut()
            .set_dynamic_metadata_string(namespace, key, value);
    }

    fn metadata(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<String> {
        let source = match source {
            MetadataSource::Dynamic => envoy_module::MetadataSource::Dynamic,
            MetadataSource::Route => envoy_module::MetadataSource::Route,
            MetadataSource::Cluster => envoy_module::MetadataSource::Cluster,
            MetadataSource::Host => envoy_module::MetadataSource::Host,
        };
        let envoy = self.envoy.borrow();
        let value = envoy.metadata_string(source, namespace, key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }
}
