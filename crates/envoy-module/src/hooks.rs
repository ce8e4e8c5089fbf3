//! Hook bodies, the same for every Envoy: the API family of the running Envoy, detected once in
//! `program_init`, only decides which callback table [`crate::abi`] hands out.

use std::ffi::{CString, c_char, c_void};
use std::sync::OnceLock;

use crate::abi::{self, EnvoyBuffer};
use crate::api::{
    BodyStatus, EnvoyHttpFilter, HeadersStatus, HttpFilter, Module, PerRouteConfig, TrailersStatus,
};
use crate::runtime::{self, ConfigInstance, FilterInstance, Hook};
use crate::target;

/// `on_program_init`: detect the running Envoy's API family from the callbacks it exports, resolve
/// that family's callbacks, and return the ABI string it expects (or the override). Returns null,
/// which makes Envoy refuse the module, after one line on stderr naming the detected family, what
/// is supported and the override, when this Envoy cannot be served.
pub fn program_init() -> *const c_char {
    static ABI: OnceLock<CString> = OnceLock::new();
    runtime::barrier("program_init", std::ptr::null(), || {
        runtime::install_panic_hook();
        let family = target::detect(crate::callbacks::exported);
        let host = match family.map(abi::install) {
            Some(Ok(host)) => host,
            Some(Err(missing)) => {
                // Envoy's logger is one of the callbacks, so this goes to stderr.
                eprintln!("{}", target::refusal(family, &missing));
                return std::ptr::null();
            }
            None => {
                eprintln!("{}", target::refusal(None, &[]));
                return std::ptr::null();
            }
        };
        let abi = ABI.get_or_init(|| {
            let (abi, overridden) =
                target::chosen_abi(host.family, std::env::var(target::ABI_OVERRIDE_ENV).ok());
            crate::log(
                crate::LogLevel::Info,
                &target::accepted(host.family, &abi, overridden),
            );
            CString::new(abi).unwrap_or_default()
        });
        if abi.is_empty() {
            std::ptr::null()
        } else {
            abi.as_ptr()
        }
    })
}

/// `on_http_filter_config_new`.
///
/// # Safety
/// Called by Envoy with its config pointer and buffers valid for the call.
pub unsafe fn config_new(
    module: &Module,
    envoy_ptr: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    runtime::barrier("config_new", std::ptr::null(), || {
        // SAFETY: Envoy's buffers are valid for the duration of this call.
        let (name, config) = unsafe { (name.as_slice(), config.as_slice()) };
        abi::with_config(envoy_ptr, |envoy| {
            match runtime::new_config(module, envoy, name, config) {
                Some(instance) => Box::into_raw(instance) as *const c_void,
                None => std::ptr::null(),
            }
        })
        .unwrap_or(std::ptr::null())
    })
}

/// `on_http_filter_per_route_config_new`.
///
/// # Safety
/// Buffers valid for the call.
pub unsafe fn per_route_config_new(
    module: &Module,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    runtime::barrier("per_route_config_new", std::ptr::null(), || {
        // SAFETY: Envoy's buffers are valid for the duration of this call.
        let (name, config) = unsafe { (name.as_slice(), config.as_slice()) };
        match runtime::new_per_route_config(module, name, config) {
            Some(cfg) => {
                runtime::per_route_config_created();
                Box::into_raw(cfg) as *const c_void
            }
            None => std::ptr::null(),
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
            runtime::per_route_config_destroyed();
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
        if config.stream_is_idle() {
            return (&raw const runtime::IDLE_STREAM).cast();
        }
        runtime::new_filter(config).into_raw() as *const c_void
    })
}

/// `on_http_filter_destroy`.
///
/// # Safety
/// `ptr` is what `filter_new` returned, destroyed once. A hook of the same stream may be running
/// (Envoy ends a stream from inside a hook when a local reply resets it); it then frees the
/// instance itself when it returns.
pub unsafe fn filter_destroy(ptr: *const c_void) {
    if ptr.is_null() || ptr == (&raw const runtime::IDLE_STREAM).cast() {
        return;
    }
    runtime::stream_barrier("filter_destroy", (), || {
        // SAFETY: handed over by filter_new, not yet freed: Envoy destroys it once, and a hook
        // that was running then frees it itself (below, in `stream_hook`).
        if unsafe { &*(ptr as *const FilterInstance) }.destroy_now() {
            // SAFETY: as above; no hook of this stream is running.
            unsafe { FilterInstance::free(ptr as *mut FilterInstance) };
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
    // SAFETY: non-null, so what filter_new returned, live until filter_destroy.
    if module_ptr.is_null() || !unsafe { runtime::wants(module_ptr, hook) } {
        return pass;
    }
    runtime::stream_barrier("stream hook", pass, || {
        // SAFETY: live until filter_destroy (deferred to here while this hook runs); only
        // shared references are formed here.
        let instance = unsafe { &*(module_ptr as *const FilterInstance) };
        let answer = abi::with_filter(envoy_ptr, |envoy| {
            runtime::run(instance, envoy, hook, pass, fail, call)
        })
        .unwrap_or(pass);
        // Envoy destroyed the stream while the filter ran (a re-entrant hook of the same stream
        // never gets here with the flag set: only the outermost run holds `busy`).
        if instance.destroyed_during_hook() && !instance.is_busy() {
            // SAFETY: filter_destroy left the instance to us; nothing refers to it any more.
            unsafe { FilterInstance::free(module_ptr as *mut FilterInstance) };
        }
        answer
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvoyFilterConfig, HttpFilterConfig, PerRouteConfig};

    fn no_config(
        _: &mut dyn EnvoyFilterConfig,
        _: &str,
        _: &[u8],
    ) -> Result<Box<dyn HttpFilterConfig>, String> {
        Err("unused".into())
    }

    fn per_route(_: &str, config: &[u8]) -> Result<PerRouteConfig, String> {
        if config == b"reject" {
            Err("rejected".into())
        } else {
            Ok(std::sync::Arc::new(()))
        }
    }

    const MODULE: Module = Module {
        new_filter_config: no_config,
        new_per_route_config: per_route,
    };

    fn buffer(bytes: &[u8]) -> EnvoyBuffer {
        EnvoyBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// A config whose streams are idle gets the idle stream's address from `filter_new`: no
    /// filter is made, every hook passes without touching Envoy (the Envoy pointer here is null
    /// and never read), and destroying it frees nothing.
    #[test]
    fn idle_streams_have_no_filter_and_pass_every_hook() {
        struct Idle;
        impl HttpFilterConfig for Idle {
            fn new_filter(&self) -> Box<dyn crate::api::HttpFilter> {
                unreachable!("an idle stream creates no filter")
            }
            fn stream_is_idle(&self) -> bool {
                true
            }
        }
        fn idle(
            _: &mut dyn EnvoyFilterConfig,
            _: &str,
            _: &[u8],
        ) -> Result<Box<dyn HttpFilterConfig>, String> {
            Ok(Box::new(Idle))
        }
        let module = Module {
            new_filter_config: idle,
            new_per_route_config: per_route,
        };
        let mut envoy = crate::testing::FakeFilterConfigEnvoy::new();
        let config = runtime::new_config(&module, &mut envoy, b"idle", b"{}").unwrap();
        let config = Box::into_raw(config) as *const c_void;
        // SAFETY: `config` is live until destroyed below; the stream pointer is what
        // `filter_new` returned, and an idle stream never reads its Envoy pointer.
        unsafe {
            let stream = filter_new(config, std::ptr::null_mut());
            assert_eq!(stream, (&raw const runtime::IDLE_STREAM).cast());
            let none = std::ptr::null_mut();
            assert_eq!(
                request_headers(none, stream, false),
                HeadersStatus::Continue as u32
            );
            assert_eq!(
                request_body(none, stream, true),
                BodyStatus::Continue as u32
            );
            assert_eq!(
                response_headers(none, stream, false),
                HeadersStatus::Continue as u32
            );
            assert_eq!(
                response_trailers(none, stream),
                TrailersStatus::Continue as u32
            );
            stream_complete(none, stream);
            filter_destroy(stream);
            config_destroy(config);
        }
    }

    /// The per-route lookup is skipped only while Envoy holds none of our per-route configs:
    /// each config Envoy receives counts until Envoy destroys it; a rejected one never counts.
    /// (The only test that creates per-route configs through the hooks, so the count is its own.)
    #[test]
    fn live_per_route_configs_are_counted_through_the_hooks() {
        assert!(!runtime::any_per_route_config());
        // SAFETY: buffers valid for the calls; each pointer is destroyed once.
        unsafe {
            assert!(per_route_config_new(&MODULE, buffer(b"r"), buffer(b"reject")).is_null());
            assert!(!runtime::any_per_route_config());
            let one = per_route_config_new(&MODULE, buffer(b"r"), buffer(b"{}"));
            let two = per_route_config_new(&MODULE, buffer(b"r"), buffer(b"{}"));
            assert!(!one.is_null() && !two.is_null());
            assert!(runtime::any_per_route_config());
            per_route_config_destroy(one);
            assert!(runtime::any_per_route_config());
            per_route_config_destroy(two);
        }
        assert!(!runtime::any_per_route_config());
    }
}
