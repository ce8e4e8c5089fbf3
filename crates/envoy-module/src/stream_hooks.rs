//! The per-stream hooks, identical in every C API family but for the callout id's width.

/// Exports the per-stream hooks; invoked by each family's `__envoy_module_hooks!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __envoy_module_stream_hooks {
    (callout_id = $callout_id:ty) => {
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
            config: *const $crate::__private::c_void,
            envoy: *mut $crate::__private::c_void,
        ) -> *const $crate::__private::c_void {
            // SAFETY: `config` is a live pointer from config_new.
            unsafe { $crate::__private::filter_new(config, envoy) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
            filter: *const $crate::__private::c_void,
        ) {
            // SAFETY: Envoy passes back what filter_new returned, once.
            unsafe { $crate::__private::filter_destroy(filter) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
            end_of_stream: bool,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::request_headers(envoy, filter, end_of_stream) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
            end_of_stream: bool,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::request_body(envoy, filter, end_of_stream) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::request_trailers(envoy, filter) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
            end_of_stream: bool,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::response_headers(envoy, filter, end_of_stream) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
            end_of_stream: bool,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::response_body(envoy, filter, end_of_stream) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
        ) -> u32 {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::response_trailers(envoy, filter) }
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
            envoy: *mut $crate::__private::c_void,
            filter: *const $crate::__private::c_void,
        ) {
            // SAFETY: live stream pointers from Envoy.
            unsafe { $crate::__private::stream_complete(envoy, filter) }
        }

        // Hooks for features the SDK does not offer (callouts, schedulers, watermarks): Envoy
        // requires them to exist; they are never triggered since the SDK never starts them.

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
            _envoy: *mut $crate::__private::c_void,
            _filter: *const $crate::__private::c_void,
            _callout_id: $callout_id,
            _result: u32,
            _headers: *mut $crate::__private::EnvoyHttpHeader,
            _headers_size: usize,
            _body: *mut $crate::__private::EnvoyBuffer,
            _body_size: usize,
        ) {
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
            _envoy: *mut $crate::__private::c_void,
            _filter: *const $crate::__private::c_void,
            _event_id: u64,
        ) {
        }
    };
}
