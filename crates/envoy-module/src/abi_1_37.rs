//! Envoy's unified dynamic-module HTTP API (1.37.0 and later; checked on 1.37.0, 1.38.3, 1.39.3,
//! 1.40.0).
//!
//! One set of callbacks takes a header-map or body selector instead of one callback per
//! direction. Declarations are written from the measured facts in `ABI-NOTES.md`; enum arguments
//! are passed as `u32` (C enums are `int`-sized), and `{ptr, len}` structs by value.

use std::ffi::{c_char, c_void};

use crate::abi::{
    self, EnvoyBuffer, EnvoyHttpHeader, attribute_id, each_header, each_header_name_of_lengths,
};
use crate::api::{
    Attribute, CounterId, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind, LogLevel,
    MetadataSource, PerRouteConfig,
};
use crate::callbacks::callback_table;
use crate::runtime;

/// A buffer the module owns, lent to Envoy for the duration of a call (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    /// A null buffer: "no value" (e.g. `set_header` with it removes the header).
    const NULL: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };

    fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

type FilterPtr = *mut c_void;
type ConfigPtr = *mut c_void;

callback_table! {
    UnifiedCallbacks;
    log: fn(u32, ModuleBuffer);
    log_enabled: fn(u32) -> bool;
    http_get_header: fn(FilterPtr, u32, ModuleBuffer, *mut EnvoyBuffer, usize, *mut usize) -> bool;
    http_get_headers_size: fn(FilterPtr, u32) -> usize;
    http_get_headers: fn(FilterPtr, u32, *mut EnvoyHttpHeader) -> bool;
    http_set_header: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_add_header: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool;
    http_send_response: fn(FilterPtr, u32, *const EnvoyHttpHeader, usize, ModuleBuffer, ModuleBuffer);
    http_get_body_size: fn(FilterPtr, u32) -> usize;
    http_get_body_chunks_size: fn(FilterPtr, u32) -> usize;
    http_get_body_chunks: fn(FilterPtr, u32, *mut EnvoyBuffer) -> bool;
    http_append_body: fn(FilterPtr, u32, ModuleBuffer) -> bool;
    http_drain_body: fn(FilterPtr, u32, usize) -> bool;
    // Declared void: treating a bool return as void is harmless, the reverse would read garbage.
    http_set_dynamic_metadata_string: fn(FilterPtr, ModuleBuffer, ModuleBuffer, ModuleBuffer);
    http_get_metadata_string: fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer, *mut EnvoyBuffer) -> bool;
    http_filter_get_attribute_string: fn(FilterPtr, u32, *mut EnvoyBuffer) -> bool;
    http_filter_get_attribute_int: fn(FilterPtr, u32, *mut u64) -> bool;
    http_filter_config_define_counter: fn(ConfigPtr, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32;
    http_filter_increment_counter: fn(FilterPtr, usize, *const ModuleBuffer, usize, u64) -> u32;
    get_most_specific_route_config: fn(FilterPtr) -> *const c_void;
    http_filter_continue_decoding: fn(FilterPtr);
    http_filter_continue_encoding: fn(FilterPtr);
}

// ------------------------------------------------------------------------------------------------
// Logging

pub(crate) fn log_enabled(cb: &UnifiedCallbacks, level: LogLevel) -> bool {
    // SAFETY: resolved callback; takes a level by value.
    unsafe { (cb.log_enabled)(level as u32) }
}

pub(crate) fn log(cb: &UnifiedCallbacks, level: LogLevel, message: &str) {
    // SAFETY: resolved callbacks; the message buffer outlives the call.
    unsafe {
        if (cb.log_enabled)(level as u32) {
            (cb.log)(level as u32, ModuleBuffer::of(message.as_bytes()));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The Envoy side of a stream

fn header_type(kind: HeaderKind) -> u32 {
    match kind {
        HeaderKind::RequestHeaders => 0,
        HeaderKind::RequestTrailers => 1,
        HeaderKind::ResponseHeaders => 2,
        HeaderKind::ResponseTrailers => 3,
    }
}

/// (received, buffered) body selectors of a direction.
fn body_types(direction: Direction) -> (u32, u32) {
    match direction {
        Direction::Request => (0, 1),
        Direction::Response => (2, 3),
    }
}

/// [`EnvoyHttpFilter`] over this family's C ABI for the duration of one hook.
pub(crate) type FfiFilter = abi::FfiFilter<UnifiedCallbacks>;

impl FfiFilter {
    fn chunks(&self, body_type: u32) -> Vec<EnvoyBuffer> {
        // SAFETY: `ptr` is the stream's filter pointer, valid during the hook.
        let n = unsafe { (self.cb.http_get_body_chunks_size)(self.ptr, body_type) };
        if n == 0 {
            return Vec::new();
        }
        let mut chunks = vec![EnvoyBuffer::NULL; n];
        // SAFETY: `chunks` has room for the `n` entries Envoy reported.
        let ok =
            unsafe { (self.cb.http_get_body_chunks)(self.ptr, body_type, chunks.as_mut_ptr()) };
        if !ok {
            chunks.clear();
        }
        chunks
    }

    /// Chunks of the buffered body, then of the current one. When a filter before us buffered the
    /// body and the chain resumes, Envoy hands the buffered data itself as the current chunk; it is
    /// then counted once.
    fn body_chunks(&self, direction: Direction) -> (Vec<EnvoyBuffer>, Vec<EnvoyBuffer>, bool) {
        let (received_type, buffered_type) = body_types(direction);
        let buffered = self.chunks(buffered_type);
        let received = self.chunks(received_type);
        let same = !received.is_empty() && received == buffered;
        (buffered, received, same)
    }

    fn body_size(&self, body_type: u32) -> usize {
        // SAFETY: valid filter pointer during the hook.
        unsafe { (self.cb.http_get_body_size)(self.ptr, body_type) }
    }
}

impl FfiFilter {
    /// `get_header` once: the `index`-th value (when Envoy found one) and the number of values.
    fn get_header(
        &self,
        kind: HeaderKind,
        name: &str,
        index: usize,
    ) -> (Option<EnvoyBuffer>, usize) {
        let mut out = EnvoyBuffer::NULL;
        let mut count = 0usize;
        // SAFETY: key buffer and out-pointers are valid for the call.
        let found = unsafe {
            (self.cb.http_get_header)(
                self.ptr,
                header_type(kind),
                ModuleBuffer::of(name.as_bytes()),
                &mut out,
                index,
                &mut count,
            )
        };
        (found.then_some(out), count)
    }
}

impl FfiFilter {
    /// How many headers of `kind` Envoy holds, and the call that writes them into an array.
    fn header_array(
        &self,
        kind: HeaderKind,
    ) -> (usize, impl FnOnce(*mut EnvoyHttpHeader) -> bool + '_) {
        // SAFETY: valid filter pointer during the hook.
        let n = unsafe { (self.cb.http_get_headers_size)(self.ptr, header_type(kind)) };
        let fill = move |array| {
            // SAFETY: `array` has room for the `n` headers Envoy reported.
            unsafe { (self.cb.http_get_headers)(self.ptr, header_type(kind), array) }
        };
        (n, fill)
    }

    fn attribute_string_by_id(&self, id: u32) -> Option<&[u8]> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: out-pointer valid for the call.
        let ok = unsafe { (self.cb.http_filter_get_attribute_string)(self.ptr, id, &mut out) };
        // SAFETY: Envoy-owned value (a request header's, for the header attributes), valid until
        // the map is mutated, which needs `&mut self`.
        ok.then(|| unsafe { out.as_slice() })
    }
}

/// The attribute that reads a request pseudo-header straight from Envoy's own slot for it
/// (`request.path`, `request.method`): the same map and value as a header read, without the
/// lookup by name. Such a header is never repeated in Envoy's map (a second value is appended to
/// the first), so its one value is also its last.
fn request_header_attribute(name: &str) -> Option<u32> {
    match name {
        ":path" => Some(0),
        ":method" => Some(4),
        _ => None,
    }
}

impl EnvoyHttpFilter for FfiFilter {
    fn header(&self, kind: HeaderKind, name: &str, index: usize) -> Option<&[u8]> {
        let (value, count) = self.get_header(kind, name, index);
        if index >= count {
            return None;
        }
        // SAFETY: Envoy's header value stays valid until the map is mutated, which needs `&mut self`.
        value.map(|v| unsafe { v.as_slice() })
    }

    fn header_count(&self, kind: HeaderKind, name: &str) -> usize {
        self.get_header(kind, name, 0).1
    }

    fn last_header(&self, kind: HeaderKind, name: &str) -> Option<&[u8]> {
        if kind == HeaderKind::RequestHeaders
            && let Some(id) = request_header_attribute(name)
        {
            return self.attribute_string_by_id(id);
        }
        // One call answers both the first value and the count: the common single-valued header
        // costs one crossing instead of two.
        let (first, count) = self.get_header(kind, name, 0);
        let value = match count {
            0 => return None,
            1 => first?,
            _ => self.get_header(kind, name, count - 1).0?,
        };
        // SAFETY: as in `header`.
        Some(unsafe { value.as_slice() })
    }

    fn for_each_header<'a>(&'a self, kind: HeaderKind, f: &mut dyn FnMut(&'a [u8], &'a [u8])) {
        let (n, fill) = self.header_array(kind);
        // SAFETY: Envoy fills the `n` headers it reported; their bytes stay valid until the map is
        // mutated, which needs `&mut self`.
        unsafe { each_header(n, fill, f) }
    }

    fn for_each_header_name_of_lengths<'a>(
        &'a self,
        kind: HeaderKind,
        lengths: u64,
        f: &mut dyn FnMut(&'a [u8]),
    ) {
        let (n, fill) = self.header_array(kind);
        // SAFETY: as in `for_each_header`.
        unsafe { each_header_name_of_lengths(n, fill, lengths, f) }
    }

    fn set_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        // SAFETY: buffers valid for the call; Envoy copies them.
        unsafe {
            (self.cb.http_set_header)(
                self.ptr,
                header_type(kind),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    fn add_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        // SAFETY: buffers valid for the call; Envoy copies them.
        unsafe {
            (self.cb.http_add_header)(
                self.ptr,
                header_type(kind),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    fn add_is_direct(&self) -> bool {
        true
    }

    fn remove_header(&mut self, kind: HeaderKind, name: &str) -> bool {
        // SAFETY: a null value asks Envoy to remove the header.
        unsafe {
            (self.cb.http_set_header)(
                self.ptr,
                header_type(kind),
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::NULL,
            )
        }
    }

    fn body(&self, direction: Direction) -> Vec<u8> {
        let (buffered, received, same) = self.body_chunks(direction);
        // SAFETY: Envoy-owned chunks of this stream, valid during the hook.
        unsafe { abi::copy_body(buffered, received, same) }
    }

    fn body_len(&self, direction: Direction) -> usize {
        let (received_type, buffered_type) = body_types(direction);
        let (_, _, same) = self.body_chunks(direction);
        let buffered = self.body_size(buffered_type);
        if same {
            buffered
        } else {
            buffered + self.body_size(received_type)
        }
    }

    /// Drains the buffered body and the current chunk, then appends `data` to the current chunk (so
    /// Envoy forwards buffered (now empty) + current = `data`); where there is no current chunk (the
    /// headers callback at end of stream) it appends to the buffered body, which Envoy creates. A
    /// `content-length` header of that direction, if present, is set to the new length (it only
    /// reaches the wire if the headers were held back until now).
    fn replace_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        let (received_type, buffered_type) = body_types(direction);
        let (_, _, same) = self.body_chunks(direction);
        // SAFETY: valid filter pointer; drain/append copy or release Envoy's buffers.
        let ok = unsafe {
            let buffered_len = self.body_size(buffered_type);
            if buffered_len > 0 {
                (self.cb.http_drain_body)(self.ptr, buffered_type, buffered_len);
            }
            let received_len = if same {
                0
            } else {
                self.body_size(received_type)
            };
            if received_len > 0 {
                (self.cb.http_drain_body)(self.ptr, received_type, received_len);
            }
            data.is_empty()
                || (self.cb.http_append_body)(self.ptr, received_type, ModuleBuffer::of(data))
                || (self.cb.http_append_body)(self.ptr, buffered_type, ModuleBuffer::of(data))
        };
        abi::content_length_follows(self, direction, data.len());
        ok
    }

    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        let raw = EnvoyHttpHeader::array_of(headers);
        // SAFETY: header array, body and details outlive the call; Envoy copies them.
        unsafe {
            (self.cb.http_send_response)(
                self.ptr,
                status,
                raw.as_ptr(),
                raw.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    fn set_dynamic_metadata_string(&mut self, namespace: &str, key: &str, value: &str) -> bool {
        // SAFETY: buffers valid for the call; Envoy copies them.
        unsafe {
            (self.cb.http_set_dynamic_metadata_string)(
                self.ptr,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
        true
    }

    fn metadata_string(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<&[u8]> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: `source` is one of Envoy's metadata source ids (0..=3); the namespace and key
        // buffers outlive the call; the out-pointer is valid for the call.
        let ok = unsafe {
            (self.cb.http_get_metadata_string)(
                self.ptr,
                source as u32,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                &mut out,
            )
        };
        // SAFETY: Envoy-owned value, valid until metadata is mutated (needs `&mut self`).
        ok.then(|| unsafe { out.as_slice() })
    }

    fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]> {
        self.attribute_string_by_id(attribute_id(attribute))
    }

    fn attribute_int(&self, attribute: Attribute) -> Option<i64> {
        self.attribute_integer(attribute)
    }

    fn increment_counter(&mut self, counter: CounterId, by: u64) {
        // SAFETY: a label-less counter: null labels with length 0.
        unsafe {
            (self.cb.http_filter_increment_counter)(self.ptr, counter.0, std::ptr::null(), 0, by);
        }
    }

    fn per_route_config(&self) -> Option<PerRouteConfig> {
        self.route_config()
    }

    fn continue_request(&mut self) {
        self.resume(Direction::Request)
    }

    fn continue_response(&mut self) {
        self.resume(Direction::Response)
    }
}

/// [`EnvoyFilterConfig`] over this family's C ABI while `config_new` runs.
pub(crate) type FfiFilterConfig = abi::FfiFilterConfig<UnifiedCallbacks>;

impl EnvoyFilterConfig for FfiFilterConfig {
    fn define_counter(&mut self, name: &str) -> Result<CounterId, String> {
        let mut id = 0usize;
        // SAFETY: valid config pointer during config_new; label-less counter; out-pointer valid.
        let result = unsafe {
            (self.cb.http_filter_config_define_counter)(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        runtime::counter_defined(name, result, id)
    }
}

abi::common_callbacks!(UnifiedCallbacks);
