//! The C API of the Envoy the module runs in, chosen once in `on_program_init`.
//!
//! Both API families are compiled in: [`crate::abi_1_36`] (per-direction callbacks, Envoy
//! 1.36.3/1.36.4) and [`crate::abi_1_37`] (the unified callbacks with a header/body selector,
//! Envoy 1.37 to 1.40). `program_init` detects the family from the callbacks the process exports
//! ([`crate::target::detect`]), resolves that family's callback table with `dlsym` and stores it
//! here. Every later call picks the stored table with one branch on an enum that never changes
//! after load; nothing else is decided per request.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use crate::api::{
    Attribute, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind, LogLevel, PerRouteConfig,
};
use crate::target::{Api, Family};
use crate::{abi_1_36, abi_1_37};

/// A buffer Envoy owns: `{const char* ptr; size_t length}` (same layout in both families).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub(crate) const NULL: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// # Safety
    /// `ptr` must be null or valid for reads of `length` bytes for `'a`.
    pub(crate) unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: non-null and valid for `length` bytes per the caller's contract.
            unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

/// A header as `{key_ptr, key_len, value_ptr, value_len}`; used both ways, in both families.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    pub(crate) const NULL: Self = Self {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };

    /// `headers` as the array Envoy's local reply takes; it borrows their bytes.
    pub(crate) fn array_of(headers: &[(&str, &[u8])]) -> Vec<Self> {
        headers
            .iter()
            .map(|(k, v)| Self {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect()
    }

    fn key(&self) -> EnvoyBuffer {
        EnvoyBuffer {
            ptr: self.key_ptr,
            length: self.key_length,
        }
    }

    fn value(&self) -> EnvoyBuffer {
        EnvoyBuffer {
            ptr: self.value_ptr,
            length: self.value_length,
        }
    }
}

/// Headers read from Envoy in one call without allocating: more spill to the heap.
const STACK_HEADERS: usize = 32;

/// Reads a whole header map with one call into Envoy: `fill` writes `n` entries into the array it
/// is given (false: Envoy refused), then `f` sees each `(name, value)` in order. Up to
/// [`STACK_HEADERS`] entries live on the stack, so a typical request is read without allocating.
///
/// # Safety
/// `fill` must write `n` entries when it returns true, whose bytes stay valid for `'a`.
pub(crate) unsafe fn each_header<'a>(
    n: usize,
    fill: impl FnOnce(*mut EnvoyHttpHeader) -> bool,
    f: &mut dyn FnMut(&'a [u8], &'a [u8]),
) {
    let each = |h: &EnvoyHttpHeader| {
        // SAFETY: Envoy-owned bytes valid for `'a` (this function's contract).
        let (name, value) = unsafe { (h.key().as_slice(), h.value().as_slice()) };
        f(name, value);
    };
    // SAFETY: this function's contract.
    unsafe { each_entry(n, fill, each) }
}

/// [`each_header`] for the names only, and of those only the names whose length `n` is below 64
/// with bit `n` of `lengths` set: the others are passed over without a call to `f`.
///
/// # Safety
/// As [`each_header`].
pub(crate) unsafe fn each_header_name_of_lengths<'a>(
    n: usize,
    fill: impl FnOnce(*mut EnvoyHttpHeader) -> bool,
    lengths: u64,
    f: &mut dyn FnMut(&'a [u8]),
) {
    let each = |h: &EnvoyHttpHeader| {
        if h.key_length < 64 && lengths & (1 << h.key_length) != 0 {
            // SAFETY: Envoy-owned bytes valid for `'a` (this function's contract).
            f(unsafe { h.key().as_slice() });
        }
    };
    // SAFETY: this function's contract.
    unsafe { each_entry(n, fill, each) }
}

/// The array both readers share: on the stack up to [`STACK_HEADERS`] entries.
///
/// # Safety
/// `fill` must write `n` entries when it returns true.
unsafe fn each_entry(
    n: usize,
    fill: impl FnOnce(*mut EnvoyHttpHeader) -> bool,
    mut each: impl FnMut(&EnvoyHttpHeader),
) {
    if n == 0 {
        return;
    }
    let mut stack = [const { std::mem::MaybeUninit::<EnvoyHttpHeader>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let array: *mut EnvoyHttpHeader = if n <= STACK_HEADERS {
        stack.as_mut_ptr().cast()
    } else {
        heap.resize(n, EnvoyHttpHeader::NULL);
        heap.as_mut_ptr()
    };
    if !fill(array) {
        return;
    }
    // SAFETY: `fill` wrote `n` initialized entries into `array` (this function's contract).
    for h in unsafe { std::slice::from_raw_parts(array, n) } {
        each(h);
    }
}

/// Envoy's side of one stream over the C ABI, for the duration of one hook: the stream's filter
/// pointer and the callback table `C` of the running family. Each family implements
/// [`EnvoyHttpFilter`] for its table (`abi_1_36::FfiFilter`, `abi_1_37::FfiFilter`); what the two
/// do alike is here.
pub(crate) struct FfiFilter<C: 'static> {
    pub(crate) ptr: *mut c_void,
    pub(crate) cb: &'static C,
}

/// Envoy's side of a filter config over the C ABI while `config_new` runs.
pub(crate) struct FfiFilterConfig<C: 'static> {
    pub(crate) ptr: *mut c_void,
    pub(crate) cb: &'static C,
}

/// The callbacks both families declare with the same C signature.
pub(crate) trait CommonCallbacks {
    fn get_most_specific_route_config(&self) -> unsafe extern "C" fn(*mut c_void) -> *const c_void;
    fn continue_decoding(&self) -> unsafe extern "C" fn(*mut c_void);
    fn continue_encoding(&self) -> unsafe extern "C" fn(*mut c_void);
    fn get_attribute_int(&self) -> unsafe extern "C" fn(*mut c_void, u32, *mut u64) -> bool;
}

/// Implements [`CommonCallbacks`] for a family's table, whose fields carry Envoy's names.
macro_rules! common_callbacks {
    ($table:ty) => {
        impl $crate::abi::CommonCallbacks for $table {
            fn get_most_specific_route_config(
                &self,
            ) -> unsafe extern "C" fn(*mut c_void) -> *const c_void {
                self.get_most_specific_route_config
            }

            fn continue_decoding(&self) -> unsafe extern "C" fn(*mut c_void) {
                self.http_filter_continue_decoding
            }

            fn continue_encoding(&self) -> unsafe extern "C" fn(*mut c_void) {
                self.http_filter_continue_encoding
            }

            fn get_attribute_int(
                &self,
            ) -> unsafe extern "C" fn(*mut c_void, u32, *mut u64) -> bool {
                self.http_filter_get_attribute_int
            }
        }
    };
}
pub(crate) use common_callbacks;

impl<C: CommonCallbacks> FfiFilter<C> {
    /// [`EnvoyHttpFilter::per_route_config`] in both families.
    #[inline]
    pub(crate) fn route_config(&self) -> Option<PerRouteConfig> {
        if !crate::runtime::any_per_route_config() {
            return None;
        }
        // SAFETY: valid filter pointer during the hook.
        let ptr = unsafe { (self.cb.get_most_specific_route_config())(self.ptr) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: non-null results are what our `per_route_config_new` returned (a boxed
        // PerRouteConfig), alive while the route references it.
        Some(unsafe { &*ptr.cast::<PerRouteConfig>() }.clone())
    }

    /// [`EnvoyHttpFilter::continue_request`] and `continue_response` in both families.
    #[inline]
    pub(crate) fn resume(&mut self, direction: Direction) {
        let resume = match direction {
            Direction::Request => self.cb.continue_decoding(),
            Direction::Response => self.cb.continue_encoding(),
        };
        // SAFETY: valid filter pointer.
        unsafe { resume(self.ptr) }
    }

    /// [`EnvoyHttpFilter::attribute_int`] in both families.
    #[inline]
    pub(crate) fn attribute_integer(&self, attribute: Attribute) -> Option<i64> {
        let mut out = 0u64;
        // SAFETY: out-pointer valid for the call.
        let ok =
            unsafe { (self.cb.get_attribute_int())(self.ptr, attribute_id(attribute), &mut out) };
        ok.then_some(out as i64)
    }
}

/// Envoy's attribute ids (the same in both families).
pub(crate) fn attribute_id(attribute: Attribute) -> u32 {
    match attribute {
        Attribute::RequestTime => 8,
        Attribute::RequestProtocol => 10,
        Attribute::ResponseCode => 15,
        Attribute::SourceAddress => 24,
    }
}

/// Total bytes of `chunks`.
pub(crate) fn total(chunks: &[EnvoyBuffer]) -> usize {
    chunks.iter().map(|c| c.length).sum()
}

/// [`EnvoyHttpFilter::body`] in both families: the buffered chunks, then the current ones unless
/// they are the buffered data itself (`same`), copied into one byte string.
///
/// # Safety
/// Every chunk is an Envoy-owned buffer valid for the call.
#[inline]
pub(crate) unsafe fn copy_body(
    buffered: Vec<EnvoyBuffer>,
    received: Vec<EnvoyBuffer>,
    same: bool,
) -> Vec<u8> {
    let parts: Vec<EnvoyBuffer> = if same {
        buffered
    } else {
        buffered.into_iter().chain(received).collect()
    };
    let mut body = Vec::with_capacity(total(&parts));
    for chunk in parts {
        // SAFETY: Envoy-owned chunk, valid during the call (this function's contract); copied
        // out immediately.
        body.extend_from_slice(unsafe { chunk.as_slice() });
    }
    body
}

/// After `replace_body`: a `content-length` header of `direction`, if any, says `len`.
#[inline]
pub(crate) fn content_length_follows(
    filter: &mut impl EnvoyHttpFilter,
    direction: Direction,
    len: usize,
) {
    let headers = match direction {
        Direction::Request => HeaderKind::RequestHeaders,
        Direction::Response => HeaderKind::ResponseHeaders,
    };
    if filter.header_count(headers, "content-length") > 0 {
        filter.set_header(headers, "content-length", len.to_string().as_bytes());
    }
}

/// The callback table of the running Envoy's family.
pub(crate) enum Callbacks {
    PerDirection(abi_1_36::PerDirectionCallbacks),
    Unified(abi_1_37::UnifiedCallbacks),
}

/// What `program_init` found: the family and its resolved callbacks.
pub(crate) struct Host {
    pub(crate) family: Family,
    pub(crate) callbacks: Callbacks,
}

static HOST: OnceLock<Host> = OnceLock::new();

/// The running Envoy, once `program_init` accepted it; None outside Envoy or after a refusal.
pub(crate) fn host() -> Option<&'static Host> {
    HOST.get()
}

/// Resolve `family`'s callbacks and keep them for the life of the process; `Err` names every
/// callback the family needs that this Envoy does not export.
pub(crate) fn install(family: Family) -> Result<&'static Host, Vec<&'static str>> {
    let callbacks = match family.api() {
        Api::PerDirection => Callbacks::PerDirection(abi_1_36::PerDirectionCallbacks::resolve()?),
        Api::Unified => Callbacks::Unified(abi_1_37::UnifiedCallbacks::resolve()?),
    };
    Ok(HOST.get_or_init(|| Host { family, callbacks }))
}

/// Run `f` with Envoy's side of one stream; None before `program_init` accepted this Envoy.
pub(crate) fn with_filter<R>(
    ptr: *mut c_void,
    f: impl FnOnce(&mut dyn EnvoyHttpFilter) -> R,
) -> Option<R> {
    match &host()?.callbacks {
        Callbacks::Unified(cb) => Some(f(&mut abi_1_37::FfiFilter { ptr, cb })),
        Callbacks::PerDirection(cb) => Some(f(&mut abi_1_36::FfiFilter { ptr, cb })),
    }
}

/// Run `f` with Envoy's side of a filter config being created (`config_new`).
pub(crate) fn with_config<R>(
    ptr: *mut c_void,
    f: impl FnOnce(&mut dyn EnvoyFilterConfig) -> R,
) -> Option<R> {
    match &host()?.callbacks {
        Callbacks::Unified(cb) => Some(f(&mut abi_1_37::FfiFilterConfig { ptr, cb })),
        Callbacks::PerDirection(cb) => Some(f(&mut abi_1_36::FfiFilterConfig { ptr, cb })),
    }
}

/// Whether Envoy logs at `level`; None outside Envoy.
pub(crate) fn log_enabled(level: LogLevel) -> Option<bool> {
    match &host()?.callbacks {
        Callbacks::Unified(cb) => Some(abi_1_37::log_enabled(cb, level)),
        Callbacks::PerDirection(cb) => Some(abi_1_36::log_enabled(cb, level)),
    }
}

/// Log through Envoy; false when not inside an accepted Envoy.
pub(crate) fn log(level: LogLevel, message: &str) -> bool {
    match host().map(|h| &h.callbacks) {
        Some(Callbacks::Unified(cb)) => abi_1_37::log(cb, level, message),
        Some(Callbacks::PerDirection(cb)) => abi_1_36::log(cb, level, message),
        None => return false,
    }
    true
}

/// Hooks [`crate::declare_module!`] exports: the union of what every supported Envoy looks up.
/// 1.36 looks up the first 16; 1.37 adds the `http_stream_*`, watermark and `config_scheduled`
/// hooks; 1.38 the `config_http_*` and `local_reply` ones. Exporting a hook an Envoy does not look
/// up costs nothing.
pub(crate) const EXPORTED_HOOKS: &[&str] = &[
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new",
    "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_per_route_config_new",
    "envoy_dynamic_module_on_http_filter_per_route_config_destroy",
    "envoy_dynamic_module_on_http_filter_new",
    "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers",
    "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers",
    "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body",
    "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_config_scheduled",
    "envoy_dynamic_module_on_http_filter_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
    "envoy_dynamic_module_on_http_filter_config_http_callout_done",
    "envoy_dynamic_module_on_http_filter_config_http_stream_headers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_data",
    "envoy_dynamic_module_on_http_filter_config_http_stream_trailers",
    "envoy_dynamic_module_on_http_filter_config_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_config_http_stream_reset",
    "envoy_dynamic_module_on_http_filter_local_reply",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy's `get_headers` does: writes each header of `headers` into the array.
    fn fill_from<'h>(
        headers: &'h [(&'static str, &'static str)],
    ) -> impl FnOnce(*mut EnvoyHttpHeader) -> bool + 'h {
        move |array| {
            for (i, (name, value)) in headers.iter().enumerate() {
                // SAFETY: the readers pass an array with room for `headers.len()` entries.
                unsafe {
                    array.add(i).write(EnvoyHttpHeader {
                        key_ptr: name.as_ptr().cast(),
                        key_length: name.len(),
                        value_ptr: value.as_ptr().cast(),
                        value_length: value.len(),
                    })
                };
            }
            true
        }
    }

    #[test]
    fn names_of_other_lengths_are_passed_over_on_the_stack_and_past_it() {
        // 3 headers fit the stack array; 40 take the heap one.
        for count in [3, STACK_HEADERS + 8] {
            let mut headers = vec![(":status", "200"), ("date", "d"), ("x-smart-header", "v")];
            headers.resize(count, ("x-pad", "p"));
            let mut names = Vec::new();
            let lengths = (1 << 4) | (1 << 14);
            // SAFETY: `fill_from` writes the `count` entries, of 'static bytes.
            unsafe {
                each_header_name_of_lengths(count, fill_from(&headers), lengths, &mut |name| {
                    names.push(name.to_vec())
                })
            };
            assert_eq!(names, [b"date".to_vec(), b"x-smart-header".to_vec()]);
            let mut all = Vec::new();
            // SAFETY: as above.
            unsafe { each_header(count, fill_from(&headers), &mut |n, v| all.push((n, v))) };
            assert_eq!(all.len(), count);
            assert_eq!(all[2], (&b"x-smart-header"[..], &b"v"[..]));
        }
    }
}
