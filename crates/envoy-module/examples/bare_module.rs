//! The do-nothing module: every hook any supported Envoy looks up, each an immediate return, no
//! allocation and no callback into Envoy. It is the benchmarks' floor (`bench/bench.py`,
//! scenario `1c`): what Envoy's dynamic-module machinery costs per stream before any module code
//! runs, and what a route's per-route config costs Envoy itself. Only `on_program_init` uses the
//! SDK, to answer the ABI string of the Envoy it is loaded into (the same detection as every
//! module built with the SDK, including the `ENVOY_ABI_VERSION` override).
//!
//! Loaded as `libbare_module.so` (`dynamic_module_config.name: bare_module`); any filter name and
//! config are accepted and ignored.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};

use envoy_module::__private::{EnvoyBuffer, EnvoyHttpHeader};

/// What the config, per-route config and filter hooks hand Envoy: a non-null address that is
/// never dereferenced, by Envoy or by us.
static TOKEN: u8 = 0;

fn token() -> *const c_void {
    (&raw const TOKEN).cast()
}

// SAFETY (for every `no_mangle` below): each name is an Envoy dynamic-module hook, exported once
// from this cdylib, with the parameter shape Envoy calls it with (1.36's split buffers are the
// same registers as 1.37's buffer structs, as in the SDK's hooks). No hook reads its pointers.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // Panic-guarded inside the SDK.
    envoy_module::__private::program_init()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _envoy: *mut c_void,
    _name_ptr: *const c_char,
    _name_len: usize,
    _config_ptr: *const c_char,
    _config_len: usize,
) -> *const c_void {
    token()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: *const c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name_ptr: *const c_char,
    _name_len: usize,
    _config_ptr: *const c_char,
    _config_len: usize,
) -> *const c_void {
    token()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    _config: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: *const c_void,
    _envoy: *mut c_void,
) -> *const c_void {
    token()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: *const c_void) {}

macro_rules! status_hook {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) -> u32 {
            0
        }
    )*};
}

macro_rules! void_hook {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) {}
    )*};
}

// Continue (0) for headers, body and trailers, and for local replies.
status_hook! {
    envoy_dynamic_module_on_http_filter_request_headers(_e: *mut c_void, _f: *const c_void, _end: bool);
    envoy_dynamic_module_on_http_filter_request_body(_e: *mut c_void, _f: *const c_void, _end: bool);
    envoy_dynamic_module_on_http_filter_request_trailers(_e: *mut c_void, _f: *const c_void);
    envoy_dynamic_module_on_http_filter_response_headers(_e: *mut c_void, _f: *const c_void, _end: bool);
    envoy_dynamic_module_on_http_filter_response_body(_e: *mut c_void, _f: *const c_void, _end: bool);
    envoy_dynamic_module_on_http_filter_response_trailers(_e: *mut c_void, _f: *const c_void);
    envoy_dynamic_module_on_http_filter_local_reply(
        _e: *mut c_void, _f: *const c_void, _code: u32, _details: EnvoyBuffer, _reset: bool);
}

void_hook! {
    envoy_dynamic_module_on_http_filter_stream_complete(_e: *mut c_void, _f: *const c_void);
    envoy_dynamic_module_on_http_filter_http_callout_done(
        _e: *mut c_void, _f: *const c_void, _id: u64, _result: u32,
        _headers: *mut EnvoyHttpHeader, _headers_size: usize, _body: *mut EnvoyBuffer, _body_size: usize);
    envoy_dynamic_module_on_http_filter_scheduled(_e: *mut c_void, _f: *const c_void, _id: u64);
    envoy_dynamic_module_on_http_filter_config_scheduled(_e: *mut c_void, _c: *const c_void, _id: u64);
    envoy_dynamic_module_on_http_filter_http_stream_headers(
        _e: *mut c_void, _f: *const c_void, _id: u64, _headers: *mut EnvoyHttpHeader, _size: usize, _end: bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(
        _e: *mut c_void, _f: *const c_void, _id: u64, _data: *const EnvoyBuffer, _count: usize, _end: bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(
        _e: *mut c_void, _f: *const c_void, _id: u64, _trailers: *mut EnvoyHttpHeader, _size: usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(_e: *mut c_void, _f: *const c_void, _id: u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(_e: *mut c_void, _f: *const c_void, _id: u64, _reason: u32);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_e: *mut c_void, _f: *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_e: *mut c_void, _f: *const c_void);
    envoy_dynamic_module_on_http_filter_config_http_callout_done(
        _e: *mut c_void, _c: *const c_void, _id: u64, _result: u32,
        _headers: *mut EnvoyHttpHeader, _headers_size: usize, _body: *mut EnvoyBuffer, _body_size: usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_headers(
        _e: *mut c_void, _c: *const c_void, _id: u64, _headers: *mut EnvoyHttpHeader, _size: usize, _end: bool);
    envoy_dynamic_module_on_http_filter_config_http_stream_data(
        _e: *mut c_void, _c: *const c_void, _id: u64, _data: *const EnvoyBuffer, _count: usize, _end: bool);
    envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
        _e: *mut c_void, _c: *const c_void, _id: u64, _trailers: *mut EnvoyHttpHeader, _size: usize);
    envoy_dynamic_module_on_http_filter_config_http_stream_complete(_e: *mut c_void, _c: *const c_void, _id: u64);
    envoy_dynamic_module_on_http_filter_config_http_stream_reset(_e: *mut c_void, _c: *const c_void, _id: u64, _reason: u32);
}
