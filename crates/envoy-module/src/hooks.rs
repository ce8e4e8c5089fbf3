//! Hook bodies that do not depend on the C API family; the family provides only Envoy's side of
//! a stream (`envoy_filter`).

use std::ffi::{CString, c_char, c_void};
use std::sync::OnceLock;

use crate::abi::envoy_filter;
use crate::api::{
    BodyStatus, EnvoyHttpFilter, HeadersStatus, HttpFilter, PerRouteConfig, TrailersStatus,
};
use crate::runtime::{self, ConfigInstance, FilterInstance, Hook};

/// `on_program_init`: resolve Envoy's callbacks and return the ABI string, or null (which makes
/// Envoy refuse the module) when this Envoy lacks callbacks of the target's family.
pub fn program_init() -> *const c_char {
    static ABI: OnceLock<CString> = OnceLock::new();
    runtime::barrier("program_init", std::ptr::null(), || {
        runtime::install_panic_hook();
        if let Err((missing, rebuild_for)) = crate::abi::install_callbacks() {
            // Envoy's logger is one of the callbacks, so this goes to stderr.
            let more = match missing.len() {
                1 => String::new(),
                n => format!(" (and {} more: {})", n - 1, missing[1..].join(", ")),
            };
            eprintln!(
                "rust_module: this module was built for Envoy {} but this Envoy does not export {}{more}; rebuild with {rebuild_for}",
                crate::target_envoy(),
                missing[0],
            );
            return std::ptr::null();
        }
        // Within the 1.37+ family the callbacks resolve across releases; say when the release differs.
        #[cfg(not(feature = "envoy-1-36"))]
        if let Some(line) = crate::target::family_mismatch(crate::target::running_family(
            crate::callbacks::exported,
        )) {
            eprintln!("{line}");
        }
        match ABI.get_or_init(|| CString::new(crate::abi_version()).unwrap_or_default()) {
            s if s.is_empty() => std::ptr::null(),
            s => s.as_ptr(),
        }
    })
}

/// `on_http_filter_config_destroy`.
///
/// # Safety
/// `ptr` is what `config_new` returned, destroyed once.
pub unsafe fn config_destroy(ptr: *const c_void) {
    runtime::barrier("config_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: created by Box::into_raw in config_new; Envoy destroys it once.
            drop(unsafe { Box::from_raw(ptr as *mut ConfigInstance) });
        }
    })
}

/// `on_http_filter_per_route_config_destroy`.
///
/// # Safety
/// `ptr` is what `per_route_config_new` returned, destroyed once.
pub unsafe fn per_route_config_destroy(ptr: *const c_void) {
    runtime::barrier("per_route_config_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: created by Box::into_raw in per_route_config_new; destroyed once.
            drop(unsafe { Box::from_raw(ptr as *mut PerRouteConfig) });
        }
    })
}

/// `on_http_filter_new`.
///
/// # Safety
/// `config_ptr` is a live pointer from `config_new`.
pub unsafe fn filter_new(
    config_ptr: *const c_void,
    _filter_envoy_ptr: *mut c_void,
) -> *const c_void {
    runtime::barrier("filter_new", std::ptr::null(), || {
        if config_ptr.is_null() {
            return std::ptr::null();
        }
        // SAFETY: Envoy keeps the config alive while streams use it.
        let config = unsafe { &*(config_ptr as *const ConfigInstance) };
        Box::into_raw(runtime::new_filter(config)) as *const c_void
    })
}

/// `on_http_filter_destroy`.
///
/// # Safety
/// `ptr` is what `filter_new` returned, destroyed once, no hook running.
pub unsafe fn filter_destroy(ptr: *const c_void) {
    runtime::barrier("filter_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: created by Box::into_raw in filter_new; destroyed once.
            drop(unsafe { Box::from_raw(ptr as *mut FilterInstance) });
        }
    })
}

/// Shared body of the per-stream hooks.
///
/// # Safety
/// `module_ptr` is a live pointer from `filter_new`; `envoy_ptr` its stream.
unsafe fn stream_hook<R: Copy>(
    envoy_ptr: *mut c_void,
    module_ptr: *const c_void,
    hook: Hook,
    pass: R,
    fail: R,
    call: impl FnOnce(&mut dyn HttpFilter, &mut dyn EnvoyHttpFilter) -> R,
) -> R {
    runtime::barrier("stream hook", pass, || {
        let Some(mut envoy) = envoy_filter(envoy_ptr) else {
            return pass;
        };
        if module_ptr.is_null() {
            return pass;
        }
        // SAFETY: live until filter_destroy; only shared references are formed here.
        let instance = unsafe { &*(module_ptr as *const FilterInstance) };
        runtime::run(instance, &mut envoy, hook, pass, fail, call)
    })
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn request_headers(e: *mut c_void, m: *const c_void, end_of_stream: bool) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::RequestHeaders,
            HeadersStatus::Continue,
            HeadersStatus::StopIteration,
            |f, envoy| f.on_request_headers(envoy, end_of_stream),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn request_body(e: *mut c_void, m: *const c_void, end_of_stream: bool) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::RequestBody,
            BodyStatus::Continue,
            BodyStatus::StopIterationNoBuffer,
            |f, envoy| f.on_request_body(envoy, end_of_stream),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn request_trailers(e: *mut c_void, m: *const c_void) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::RequestTrailers,
            TrailersStatus::Continue,
            TrailersStatus::StopIteration,
            |f, envoy| f.on_request_trailers(envoy),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn response_headers(e: *mut c_void, m: *const c_void, end_of_stream: bool) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::ResponseHeaders,
            HeadersStatus::Continue,
            HeadersStatus::StopIteration,
            |f, envoy| f.on_response_headers(envoy, end_of_stream),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn response_body(e: *mut c_void, m: *const c_void, end_of_stream: bool) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::ResponseBody,
            BodyStatus::Continue,
            BodyStatus::StopIterationNoBuffer,
            |f, envoy| f.on_response_body(envoy, end_of_stream),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn response_trailers(e: *mut c_void, m: *const c_void) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(
            e,
            m,
            Hook::ResponseTrailers,
            TrailersStatus::Continue,
            TrailersStatus::StopIteration,
            |f, envoy| f.on_response_trailers(envoy),
        ) as u32
    }
}

/// # Safety
/// See `stream_hook`.
pub unsafe fn stream_complete(e: *mut c_void, m: *const c_void) {
    // SAFETY: forwarded contract.
    unsafe {
        stream_hook(e, m, Hook::StreamComplete, (), (), |f, envoy| {
            f.on_stream_complete(envoy)
        })
    }
}
