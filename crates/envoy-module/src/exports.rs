//! The hooks [`crate::declare_module!`] exports: the union of what every supported Envoy looks up
//! (see `abi::EXPORTED_HOOKS`), one definition each.
//!
//! Two hooks take arguments that differ between the API families:
//! - `config_new` and `per_route_config_new`: 1.36 passes each name and config as two arguments
//!   (`const char*`, `size_t`), 1.37+ as one `{const char*, size_t}` struct by value. Under the
//!   x86-64 System V and AArch64 procedure-call standards a 16-byte struct of two integer words
//!   passed by value travels in the same two consecutive integer registers as the two separate
//!   arguments (these hooks have at most five integer arguments, so none spills to the stack):
//!   the hooks are declared with the two-argument form and read both families' calls correctly.
//!   Other architectures are refused at compile time below rather than guessed.
//! - `http_callout_done`: the callout id is a `uint32_t` in 1.36 and a `uint64_t` from 1.37; the
//!   hook does nothing and never reads it.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "envoy-module: the config hooks rely on the x86-64/AArch64 rule that a 16-byte struct of two integers is passed like two integer arguments; check that rule for this architecture first"
);

/// Exports every hook from the calling crate; used by [`crate::declare_module!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __envoy_module_hooks {
    ($module:expr) => {
        const _: () = {
            use $crate::__private::{EnvoyBuffer, EnvoyHttpHeader, c_char, c_void};

            static MODULE: $crate::Module = $module;

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
                $crate::__private::program_init()
            }

            /// 1.36: `(envoy, name_ptr, name_len, config_ptr, config_len)`; 1.37+: `(envoy, name
            /// buffer, config buffer)`, the same registers (see this file's notes).
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
                envoy: *mut c_void,
                name_ptr: *const c_char,
                name_len: usize,
                config_ptr: *const c_char,
                config_len: usize,
            ) -> *const c_void {
                let name = EnvoyBuffer { ptr: name_ptr, length: name_len };
                let config = EnvoyBuffer { ptr: config_ptr, length: config_len };
                // SAFETY: Envoy calls this hook with pointers valid per the ABI.
                unsafe { $crate::__private::config_new(&MODULE, envoy, name, config) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
                // SAFETY: Envoy passes back what config_new returned, once.
                unsafe { $crate::__private::config_destroy(config) }
            }

            /// Same two shapes as `config_new`, without the Envoy pointer.
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
                name_ptr: *const c_char,
                name_len: usize,
                config_ptr: *const c_char,
                config_len: usize,
            ) -> *const c_void {
                let name = EnvoyBuffer { ptr: name_ptr, length: name_len };
                let config = EnvoyBuffer { ptr: config_ptr, length: config_len };
                // SAFETY: Envoy's buffers are valid for the call.
                unsafe { $crate::__private::per_route_config_new(&MODULE, name, config) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: *const c_void) {
                // SAFETY: Envoy passes back what per_route_config_new returned, once.
                unsafe { $crate::__private::per_route_config_destroy(config) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
                config: *const c_void,
                envoy: *mut c_void,
            ) -> *const c_void {
                // SAFETY: `config` is a live pointer from config_new.
                unsafe { $crate::__private::filter_new(config, envoy) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
                filter: *const c_void,
            ) {
                // SAFETY: Envoy passes back what filter_new returned, once.
                unsafe { $crate::__private::filter_destroy(filter) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
                envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::request_headers(envoy, filter, end_of_stream) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
                envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::request_body(envoy, filter, end_of_stream) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
                envoy: *mut c_void,
                filter: *const c_void,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::request_trailers(envoy, filter) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
                envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::response_headers(envoy, filter, end_of_stream) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
                envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::response_body(envoy, filter, end_of_stream) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
                envoy: *mut c_void,
                filter: *const c_void,
            ) -> u32 {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::response_trailers(envoy, filter) }
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
                envoy: *mut c_void,
                filter: *const c_void,
            ) {
                // SAFETY: live stream pointers from Envoy.
                unsafe { $crate::__private::stream_complete(envoy, filter) }
            }

            // Hooks for features the SDK does not offer (callouts, schedulers, watermarks): Envoy
            // requires them to exist; they are never triggered since the SDK never starts them.
            // The callout id is a u32 in 1.36 and a u64 from 1.37: declared u64 and never read.

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _callout_id: u64,
                _result: u32,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _body: *mut EnvoyBuffer,
                _body_size: usize,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _event_id: u64,
            ) {
            }

            // Looked up from 1.37 (config_scheduled, http_stream_*, watermarks) and from 1.38
            // (config_http_*, local_reply); never triggered since the SDK never starts them.

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
                _envoy: *mut c_void,
                _config: *const c_void,
                _event_id: u64,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _end_stream: bool,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _data: *const EnvoyBuffer,
                _data_count: usize,
                _end_stream: bool,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _trailers: *mut EnvoyHttpHeader,
                _trailers_size: usize,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _reason: u32,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
                _envoy: *mut c_void,
                _filter: *const c_void,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
                _envoy: *mut c_void,
                _filter: *const c_void,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
                _envoy: *mut c_void,
                _config: *const c_void,
                _callout_id: u64,
                _result: u32,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _body: *mut EnvoyBuffer,
                _body_size: usize,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
                _envoy: *mut c_void,
                _config: *const c_void,
                _stream_id: u64,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _end_stream: bool,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
                _envoy: *mut c_void,
                _config: *const c_void,
                _stream_id: u64,
                _data: *const EnvoyBuffer,
                _data_count: usize,
                _end_stream: bool,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
                _envoy: *mut c_void,
                _config: *const c_void,
                _stream_id: u64,
                _trailers: *mut EnvoyHttpHeader,
                _trailers_size: usize,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
                _envoy: *mut c_void,
                _config: *const c_void,
                _stream_id: u64,
            ) {
            }

            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
                _envoy: *mut c_void,
                _config: *const c_void,
                _stream_id: u64,
                _reason: u32,
            ) {
            }

            /// Local replies proceed unchanged (status Continue).
            #[allow(unsafe_code)]
            #[unsafe(no_mangle)]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
                _envoy: *mut c_void,
                _filter: *const c_void,
                _response_code: u32,
                _details: EnvoyBuffer,
                _reset_imminent: bool,
            ) -> u32 {
                0
            }
        };
    };
}
