//! Envoy 1.36.3/1.36.4 dynamic-module HTTP API: one callback per direction and map
//! (`get_request_header`, `set_response_trailer`, ...), `{ptr, len}` passed as two arguments, and
//! no callback that appends a header value.
//!
//! `add_header` is emulated: see [`FfiFilter::add_header`]. Enum arguments are passed as `u32`.

use std::ffi::{c_char, c_void};

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader, attribute_id, each_header, total};
use crate::api::{
    Attribute, CounterId, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind, LogLevel,
    MetadataSource, PerRouteConfig,
};
use crate::callbacks::callback_table;
use crate::runtime;

type FilterPtr = *mut c_void;
type ConfigPtr = *mut c_void;
type Bytes = *const c_char;

type GetHeaderFn =
    unsafe extern "C" fn(FilterPtr, Bytes, usize, *mut Bytes, *mut usize, usize) -> usize;
type SetHeaderFn = unsafe extern "C" fn(FilterPtr, Bytes, usize, Bytes, usize) -> bool;
type GetHeadersFn = unsafe extern "C" fn(FilterPtr, *mut EnvoyHttpHeader) -> bool;
type HeadersCountFn = unsafe extern "C" fn(FilterPtr) -> usize;
type BodyVectorFn = unsafe extern "C" fn(FilterPtr, *mut EnvoyBuffer) -> bool;
type BodyVectorSizeFn = unsafe extern "C" fn(FilterPtr, *mut usize) -> bool;
type AppendBodyFn = unsafe extern "C" fn(FilterPtr, Bytes, usize) -> bool;
type DrainBodyFn = unsafe extern "C" fn(FilterPtr, usize) -> bool;

callback_table! {
    PerDirectionCallbacks;
    log: fn(u32, Bytes, usize);
    log_enabled: fn(u32) -> bool;
    http_get_request_header: fn(FilterPtr, Bytes, usize, *mut Bytes, *mut usize, usize) -> usize;
    http_get_request_trailer: fn(FilterPtr, Bytes, usize, *mut Bytes, *mut usize, usize) -> usize;
    http_get_response_header: fn(FilterPtr, Bytes, usize, *mut Bytes, *mut usize, usize) -> usize;
    http_get_response_trailer: fn(FilterPtr, Bytes, usize, *mut Bytes, *mut usize, usize) -> usize;
    http_set_request_header: fn(FilterPtr, Bytes, usize, Bytes, usize) -> bool;
    http_set_request_trailer: fn(FilterPtr, Bytes, usize, Bytes, usize) -> bool;
    http_set_response_header: fn(FilterPtr, Bytes, usize, Bytes, usize) -> bool;
    http_set_response_trailer: fn(FilterPtr, Bytes, usize, Bytes, usize) -> bool;
    http_get_request_headers_count: fn(FilterPtr) -> usize;
    http_get_request_trailers_count: fn(FilterPtr) -> usize;
    http_get_response_headers_count: fn(FilterPtr) -> usize;
    http_get_response_trailers_count: fn(FilterPtr) -> usize;
    http_get_request_headers: fn(FilterPtr, *mut EnvoyHttpHeader) -> bool;
    http_get_request_trailers: fn(FilterPtr, *mut EnvoyHttpHeader) -> bool;
    http_get_response_headers: fn(FilterPtr, *mut EnvoyHttpHeader) -> bool;
    http_get_response_trailers: fn(FilterPtr, *mut EnvoyHttpHeader) -> bool;
    http_get_buffered_request_body_vector: fn(FilterPtr, *mut EnvoyBuffer) -> bool;
    http_get_buffered_request_body_vector_size: fn(FilterPtr, *mut usize) -> bool;
    http_get_received_request_body_vector: fn(FilterPtr, *mut EnvoyBuffer) -> bool;
    http_get_received_request_body_vector_size: fn(FilterPtr, *mut usize) -> bool;
    http_get_buffered_response_body_vector: fn(FilterPtr, *mut EnvoyBuffer) -> bool;
    http_get_buffered_response_body_vector_size: fn(FilterPtr, *mut usize) -> bool;
    http_get_received_response_body_vector: fn(FilterPtr, *mut EnvoyBuffer) -> bool;
    http_get_received_response_body_vector_size: fn(FilterPtr, *mut usize) -> bool;
    http_append_buffered_request_body: fn(FilterPtr, Bytes, usize) -> bool;
    http_append_received_request_body: fn(FilterPtr, Bytes, usize) -> bool;
    http_append_buffered_response_body: fn(FilterPtr, Bytes, usize) -> bool;
    http_append_received_response_body: fn(FilterPtr, Bytes, usize) -> bool;
    http_drain_buffered_request_body: fn(FilterPtr, usize) -> bool;
    http_drain_received_request_body: fn(FilterPtr, usize) -> bool;
    http_drain_buffered_response_body: fn(FilterPtr, usize) -> bool;
    http_drain_received_response_body: fn(FilterPtr, usize) -> bool;
    http_send_response: fn(FilterPtr, u32, *const EnvoyHttpHeader, usize, Bytes, usize);
    http_set_dynamic_metadata_string: fn(FilterPtr, Bytes, usize, Bytes, usize, Bytes, usize) -> bool;
    http_get_metadata_string: fn(FilterPtr, u32, Bytes, usize, Bytes, usize, *mut Bytes, *mut usize) -> bool;
    http_filter_get_attribute_string: fn(FilterPtr, u32, *mut Bytes, *mut usize) -> bool;
    http_filter_get_attribute_int: fn(FilterPtr, u32, *mut u64) -> bool;
    http_filter_config_define_counter: fn(ConfigPtr, Bytes, usize, *mut usize) -> u32;
    http_filter_increment_counter: fn(FilterPtr, usize, u64) -> u32;
    get_most_specific_route_config: fn(FilterPtr) -> *const c_void;
    http_filter_continue_decoding: fn(FilterPtr);
    http_filter_continue_encoding: fn(FilterPtr);
}

// ------------------------------------------------------------------------------------------------
// Logging

pub(crate) fn log_enabled(cb: &PerDirectionCallbacks, level: LogLevel) -> bool {
    // SAFETY: resolved callback; takes a level by value.
    unsafe { (cb.log_enabled)(level as u32) }
}

pub(crate) fn log(cb: &PerDirectionCallbacks, level: LogLevel, message: &str) {
    // SAFETY: resolved callbacks; the message outlives the call.
    unsafe {
        if (cb.log_enabled)(level as u32) {
            (cb.log)(level as u32, message.as_ptr().cast(), message.len());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The Envoy side of a stream

/// Per-direction body callbacks: (vector, vector size, append, drain).
struct BodyFns {
    vector: BodyVectorFn,
    size: BodyVectorSizeFn,
    append: AppendBodyFn,
    drain: DrainBodyFn,
}

/// Joins the values of `name` into one field line, the emulation of `add` where the ABI has none:
/// `cookie` with `; ` (RFC 6265 section 5.4: a cookie joined with a comma would read as part of
/// the previous cookie's value), everything else with `,`, as Envoy joins values itself (RFC 9110
/// section 5.3).
fn join_values(name: &str, values: &[&[u8]]) -> Vec<u8> {
    let separator: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b","
    };
    values.join(separator)
}

/// [`EnvoyHttpFilter`] over this family's C ABI for the duration of one hook.
pub(crate) type FfiFilter = abi::FfiFilter<PerDirectionCallbacks>;

impl FfiFilter {
    fn get_fn(&self, kind: HeaderKind) -> GetHeaderFn {
        match kind {
            HeaderKind::RequestHeaders => self.cb.http_get_request_header,
            HeaderKind::RequestTrailers => self.cb.http_get_request_trailer,
            HeaderKind::ResponseHeaders => self.cb.http_get_response_header,
            HeaderKind::ResponseTrailers => self.cb.http_get_response_trailer,
        }
    }

    fn set_fn(&self, kind: HeaderKind) -> SetHeaderFn {
        match kind {
            HeaderKind::RequestHeaders => self.cb.http_set_request_header,
            HeaderKind::RequestTrailers => self.cb.http_set_request_trailer,
            HeaderKind::ResponseHeaders => self.cb.http_set_response_header,
            HeaderKind::ResponseTrailers => self.cb.http_set_response_trailer,
        }
    }

    fn all_fns(&self, kind: HeaderKind) -> (HeadersCountFn, GetHeadersFn) {
        match kind {
            HeaderKind::RequestHeaders => (
                self.cb.http_get_request_headers_count,
                self.cb.http_get_request_headers,
            ),
            HeaderKind::RequestTrailers => (
                self.cb.http_get_request_trailers_count,
                self.cb.http_get_request_trailers,
            ),
            HeaderKind::ResponseHeaders => (
                self.cb.http_get_response_headers_count,
                self.cb.http_get_response_headers,
            ),
            HeaderKind::ResponseTrailers => (
                self.cb.http_get_response_trailers_count,
                self.cb.http_get_response_trailers,
            ),
        }
    }

    /// (received, buffered) body callbacks of a direction.
    fn body_fns(&self, direction: Direction) -> (BodyFns, BodyFns) {
        let cb = self.cb;
        match direction {
            Direction::Request => (
                BodyFns {
                    vector: cb.http_get_received_request_body_vector,
                    size: cb.http_get_received_request_body_vector_size,
                    append: cb.http_append_received_request_body,
                    drain: cb.http_drain_received_request_body,
                },
                BodyFns {
                    vector: cb.http_get_buffered_request_body_vector,
                    size: cb.http_get_buffered_request_body_vector_size,
                    append: cb.http_append_buffered_request_body,
                    drain: cb.http_drain_buffered_request_body,
                },
            ),
            Direction::Response => (
                BodyFns {
                    vector: cb.http_get_received_response_body_vector,
                    size: cb.http_get_received_response_body_vector_size,
                    append: cb.http_append_received_response_body,
                    drain: cb.http_drain_received_response_body,
                },
                BodyFns {
                    vector: cb.http_get_buffered_response_body_vector,
                    size: cb.http_get_buffered_response_body_vector_size,
                    append: cb.http_append_buffered_response_body,
                    drain: cb.http_drain_buffered_response_body,
                },
            ),
        }
    }

    fn chunks(&self, fns: &BodyFns) -> Vec<EnvoyBuffer> {
        let mut n = 0usize;
        // SAFETY: valid filter pointer during the hook; out-pointer valid.
        if !unsafe { (fns.size)(self.ptr, &mut n) } || n == 0 {
            return Vec::new();
        }
        let mut chunks = vec![EnvoyBuffer::NULL; n];
        // SAFETY: `chunks` has room for the `n` entries Envoy reported.
        if !unsafe { (fns.vector)(self.ptr, chunks.as_mut_ptr()) } {
            chunks.clear();
        }
        chunks
    }

    /// Buffered chunks, current chunks, and whether they are the same buffer (Envoy hands a
    /// resumed filter the buffered data itself as the current chunk).
    fn body_chunks(&self, direction: Direction) -> (Vec<EnvoyBuffer>, Vec<EnvoyBuffer>, bool) {
        let (received, buffered) = self.body_fns(direction);
        let buffered = self.chunks(&buffered);
        let received = self.chunks(&received);
        let same = !received.is_empty() && received == buffered;
        (buffered, received, same)
    }
}

impl EnvoyHttpFilter for FfiFilter {
    fn header(&self, kind: HeaderKind, name: &str, index: usize) -> Option<&[u8]> {
        let mut ptr: Bytes = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: key and out-pointers valid for the call.
        let count = unsafe {
            (self.get_fn(kind))(
                self.ptr,
                name.as_ptr().cast(),
                name.len(),
                &mut ptr,
                &mut len,
                index,
            )
        };
        if index >= count {
            return None;
        }
        // SAFETY: Envoy's header value stays valid until the map is mutated, which needs `&mut self`.
        Some(unsafe { EnvoyBuffer { ptr, length: len }.as_slice() })
    }

    fn header_count(&self, kind: HeaderKind, name: &str) -> usize {
        let mut ptr: Bytes = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: as in `header`.
        unsafe {
            (self.get_fn(kind))(
                self.ptr,
                name.as_ptr().cast(),
                name.len(),
                &mut ptr,
                &mut len,
                0,
            )
        }
    }

    fn for_each_header<'a>(&'a self, kind: HeaderKind, f: &mut dyn FnMut(&'a [u8], &'a [u8])) {
        let (count, get) = self.all_fns(kind);
        // SAFETY: valid filter pointer during the hook.
        let n = unsafe { count(self.ptr) };
        let fill = |array| {
            // SAFETY: `array` has room for the `n` headers Envoy reported.
            unsafe { get(self.ptr, array) }
        };
        // SAFETY: Envoy fills the `n` headers it reported; their bytes stay valid until the map is
        // mutated, which needs `&mut self`.
        unsafe { each_header(n, fill, f) }
    }

    fn set_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        // A null value pointer means "remove" to 1.36; an empty value must stay a value.
        let value_ptr: Bytes = if value.is_empty() {
            c"".as_ptr()
        } else {
            value.as_ptr().cast()
        };
        // SAFETY: buffers valid for the call; Envoy copies them.
        unsafe {
            (self.set_fn(kind))(
                self.ptr,
                name.as_ptr().cast(),
                name.len(),
                value_ptr,
                value.len(),
            )
        }
    }

    /// 1.36 has no "add header" callback and its `set` replaces every value. Appending is emulated
    /// by combining the existing values and the new one into a single comma-separated line, which
    /// RFC 9110 (section 5.3) makes equivalent to separate lines. `set-cookie` cannot be combined
    /// that way, so adding a second `set-cookie` is refused (returns false) on Envoy 1.36.
    fn add_header(&mut self, kind: HeaderKind, name: &str, value: &[u8]) -> bool {
        let existing: Vec<Vec<u8>> = (0..self.header_count(kind, name))
            .filter_map(|i| self.header(kind, name, i).map(<[u8]>::to_vec))
            .collect();
        if existing.is_empty() {
            return self.set_header(kind, name, value);
        }
        if name.eq_ignore_ascii_case("set-cookie") {
            return false;
        }
        let mut values: Vec<&[u8]> = existing.iter().map(Vec::as_slice).collect();
        values.push(value);
        let combined = join_values(name, &values);
        self.set_header(kind, name, &combined)
    }

    fn remove_header(&mut self, kind: HeaderKind, name: &str) -> bool {
        // SAFETY: a null value asks Envoy to remove the header.
        unsafe {
            (self.set_fn(kind))(
                self.ptr,
                name.as_ptr().cast(),
                name.len(),
                std::ptr::null(),
                0,
            )
        }
    }

    fn body(&self, direction: Direction) -> Vec<u8> {
        let (buffered, received, same) = self.body_chunks(direction);
        // SAFETY: Envoy-owned chunks of this stream, valid during the hook.
        unsafe { abi::copy_body(buffered, received, same) }
    }

    fn body_len(&self, direction: Direction) -> usize {
        let (buffered, received, same) = self.body_chunks(direction);
        if same {
            total(&buffered)
        } else {
            total(&buffered) + total(&received)
        }
    }

    /// Same semantics as the 1.37+ target: drain buffered and current data, append `data` to the
    /// current chunk, or to the buffered body where there is no current chunk (headers callback at
    /// end of stream); a present `content-length` is updated.
    fn replace_body(&mut self, direction: Direction, data: &[u8]) -> bool {
        let (received_fns, buffered_fns) = self.body_fns(direction);
        let (buffered, received, same) = self.body_chunks(direction);
        // SAFETY: valid filter pointer; drain/append copy or release Envoy's buffers.
        let ok = unsafe {
            if total(&buffered) > 0 {
                (buffered_fns.drain)(self.ptr, total(&buffered));
            }
            if !same && total(&received) > 0 {
                (received_fns.drain)(self.ptr, total(&received));
            }
            data.is_empty()
                || (received_fns.append)(self.ptr, data.as_ptr().cast(), data.len())
                || (buffered_fns.append)(self.ptr, data.as_ptr().cast(), data.len())
        };
        abi::content_length_follows(self, direction, data.len());
        ok
    }

    /// 1.36's local reply has no details argument: `details` is logged at debug level instead.
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        let raw = EnvoyHttpHeader::array_of(headers);
        if !details.is_empty() {
            crate::log(
                LogLevel::Debug,
                &format!("rust_module: local reply {status}: {details}"),
            );
        }
        // SAFETY: header array and body outlive the call; Envoy copies them.
        unsafe {
            (self.cb.http_send_response)(
                self.ptr,
                status,
                raw.as_ptr(),
                raw.len(),
                body.as_ptr().cast(),
                body.len(),
            )
        }
    }

    fn set_dynamic_metadata_string(&mut self, namespace: &str, key: &str, value: &str) -> bool {
        // SAFETY: buffers valid for the call; Envoy copies them.
        unsafe {
            (self.cb.http_set_dynamic_metadata_string)(
                self.ptr,
                namespace.as_ptr().cast(),
                namespace.len(),
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
            )
        }
    }

    fn metadata_string(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<&[u8]> {
        let mut ptr: Bytes = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: `source` is one of Envoy's metadata source ids (0..=3); the namespace and key
        // buffers outlive the call; the out-pointers are valid for the call.
        let ok = unsafe {
            (self.cb.http_get_metadata_string)(
                self.ptr,
                source as u32,
                namespace.as_ptr().cast(),
                namespace.len(),
                key.as_ptr().cast(),
                key.len(),
                &mut ptr,
                &mut len,
            )
        };
        // SAFETY: Envoy-owned value, valid until metadata is mutated (needs `&mut self`).
        ok.then(|| unsafe { EnvoyBuffer { ptr, length: len }.as_slice() })
    }

    fn attribute_string(&self, attribute: Attribute) -> Option<&[u8]> {
        let mut ptr: Bytes = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: out-pointers valid for the call.
        let ok = unsafe {
            (self.cb.http_filter_get_attribute_string)(
                self.ptr,
                attribute_id(attribute),
                &mut ptr,
                &mut len,
            )
        };
        // SAFETY: Envoy-owned value, valid during the hook.
        ok.then(|| unsafe { EnvoyBuffer { ptr, length: len }.as_slice() })
    }

    fn attribute_int(&self, attribute: Attribute) -> Option<i64> {
        self.attribute_integer(attribute)
    }

    fn increment_counter(&mut self, counter: CounterId, by: u64) {
        // SAFETY: valid filter pointer; the id came from define_counter on its config.
        unsafe {
            (self.cb.http_filter_increment_counter)(self.ptr, counter.0, by);
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
pub(crate) type FfiFilterConfig = abi::FfiFilterConfig<PerDirectionCallbacks>;

impl EnvoyFilterConfig for FfiFilterConfig {
    fn define_counter(&mut self, name: &str) -> Result<CounterId, String> {
        let mut id = 0usize;
        // SAFETY: valid config pointer during config_new; out-pointer valid.
        let result = unsafe {
            (self.cb.http_filter_config_define_counter)(
                self.ptr,
                name.as_ptr().cast(),
                name.len(),
                &mut id,
            )
        };
        runtime::counter_defined(name, result, id)
    }
}

#[cfg(test)]
mod tests {
    use super::join_values;

    #[test]
    fn add_emulation_joins_as_envoy_and_cookies_as_cookies() {
        assert_eq!(join_values("x-a", &[b"a", b"b c", b"d"]), b"a,b c,d");
        assert_eq!(join_values("x-a", &[b"only"]), b"only");
        assert_eq!(
            join_values("Cookie", &[b"foo=bar", b"test=123"]),
            b"foo=bar; test=123"
        );
    }
}

abi::common_callbacks!(PerDirectionCallbacks);
