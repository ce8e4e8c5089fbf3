//! One HTTP stream: its instance (in one allocation with the filter), the hook mask every stream
//! hook reads first, building it in `filter_new`, and running a hook behind the panic barrier.

use std::alloc::Layout;
use std::cell::{Cell, UnsafeCell};
use std::ptr::NonNull;
use std::sync::Arc;

use super::configs::{ConfigInstance, ConfigShared};
use super::panics::caught;
use super::stream_memory::{keep_stream_memory, take_stream_memory};
use crate::api::{EnvoyHttpFilter, Hooks, HttpFilter, LogLevel};
use crate::{PANIC_DETAILS, log};

/// The module side of one HTTP stream (what `filter_new` returns to Envoy).
///
/// Envoy may re-enter the hooks of a stream while one of them runs: a local reply sent from a
/// request hook runs the encoder chain synchronously, calling our response hooks. A `&mut` to the
/// filter is then already live, so re-entrant hooks pass through without reaching the filter;
/// `busy` detects them and `state` is only borrowed mutably while `busy` is held.
///
/// `hooks` comes first (`repr(C)`): every stream hook reads that byte before anything else and
/// returns at once when its bit is clear, without a panic barrier or a call into the filter.
///
/// Envoy may also destroy the stream from inside a hook (a local reply sent while the response is
/// being encoded resets it): `filter_destroy` then only sets `destroy_pending`, and the hook frees
/// the instance once it has returned from the filter.
///
/// The instance heads one allocation with the filter itself (a [`Stream`]); `free` knows the
/// filter's type and frees both.
#[repr(C)]
pub struct FilterInstance {
    hooks: Cell<u8>,
    busy: Cell<bool>,
    destroy_pending: Cell<bool>,
    state: UnsafeCell<FilterState>,
    free: unsafe fn(*mut FilterInstance),
}

/// One allocation per stream: the instance, then the filter.
#[repr(C)]
struct Stream<F> {
    instance: FilterInstance,
    filter: F,
}

/// Frees a [`Stream`] of filter type `F` from its instance pointer.
///
/// # Safety
/// `instance` came from [`NewFilter::new`] with this `F` and is freed once.
unsafe fn free_stream<F>(instance: *mut FilterInstance) {
    let stream = instance.cast::<Stream<F>>();
    // SAFETY: the instance is the first field of a `repr(C)` `Stream<F>` written by
    // `NewFilter::new` (the contract above), so the pointer is the stream's, dropped once here.
    unsafe { std::ptr::drop_in_place(stream) };
    // SAFETY: `stream` came from `take_stream_memory` with this layout and is no longer used.
    unsafe {
        keep_stream_memory(
            NonNull::new_unchecked(stream.cast()),
            Layout::new::<Stream<F>>(),
        )
    };
}

/// A stream's filter in the SDK's per-stream allocation ([`crate::HttpFilterConfig::new_stream_filter`]).
pub struct NewFilter(std::ptr::NonNull<FilterInstance>);

impl NewFilter {
    /// Moves `filter` into the stream's one allocation.
    pub fn new<F: HttpFilter + 'static>(filter: F) -> NewFilter {
        let stream = take_stream_memory(Layout::new::<Stream<F>>())
            .cast::<Stream<F>>()
            .as_ptr();
        let value = Stream {
            instance: FilterInstance {
                hooks: Cell::new(Hooks::ALL.bits()),
                busy: Cell::new(false),
                destroy_pending: Cell::new(false),
                state: UnsafeCell::new(FilterState {
                    filter: None,
                    shared: None,
                    poisoned: false,
                }),
                free: free_stream::<F>,
            },
            filter,
        };
        // SAFETY: `stream` is a block of `Stream<F>`'s layout that nothing else refers to; the
        // filter's address is stable for the block's life.
        unsafe {
            stream.write(value);
            let filter: *mut dyn HttpFilter = &raw mut (*stream).filter;
            (*(*stream).instance.state.get()).filter = std::ptr::NonNull::new(filter);
        }
        // SAFETY: the block is not null; the instance is the stream's first field.
        NewFilter(unsafe { NonNull::new_unchecked(stream.cast()) })
    }

    /// The instance of a stream whose filter could not be made: it answers 500.
    fn failed() -> NewFilter {
        struct NoFilter;
        impl HttpFilter for NoFilter {}
        let mut stream = NewFilter::new(NoFilter);
        stream.state_mut().filter = None;
        stream
    }

    /// Hands the instance to Envoy: freed by `filter_destroy` ([`FilterInstance::free`]).
    pub(crate) fn into_raw(self) -> *mut FilterInstance {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr
    }

    fn state_mut(&mut self) -> &mut FilterState {
        // SAFETY: this `NewFilter` owns the instance exclusively; no hook has run yet.
        unsafe { &mut *self.0.as_ref().state.get() }
    }
}

impl std::ops::Deref for NewFilter {
    type Target = FilterInstance;
    fn deref(&self) -> &FilterInstance {
        // SAFETY: owned and live until dropped or handed to Envoy.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for NewFilter {
    fn drop(&mut self) {
        // SAFETY: owned, never handed to Envoy (`into_raw` forgets), freed once here.
        unsafe { FilterInstance::free(self.0.as_ptr()) }
    }
}

impl FilterInstance {
    /// Frees the instance and its filter.
    ///
    /// # Safety
    /// `instance` came from [`NewFilter`] and is freed once, with no reference to it left.
    pub(crate) unsafe fn free(instance: *mut FilterInstance) {
        // SAFETY: live (the contract above); `free` was set for this allocation's filter type.
        unsafe { ((*instance).free)(instance) }
    }

    /// Called by `filter_destroy`: true when the instance may be freed now, false when a hook of
    /// this stream is running and will free it on its way out.
    pub(crate) fn destroy_now(&self) -> bool {
        if self.busy.get() {
            self.destroy_pending.set(true);
            self.hooks.set(Hooks::NONE.bits());
            false
        } else {
            true
        }
    }

    /// Whether Envoy destroyed the stream while a hook ran: the hook must free the instance.
    pub(crate) fn destroyed_during_hook(&self) -> bool {
        self.destroy_pending.get()
    }

    /// Whether a hook of this stream is running (the outermost one holds it).
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.get()
    }
}

/// What `filter_new` hands Envoy for a stream with nothing to do ([`HttpFilterConfig::stream_is_idle`]):
/// a hook mask with no bit set, read like the first byte of a [`FilterInstance`], never freed.
pub(crate) static IDLE_STREAM: u8 = 0;

/// Whether a hook in `hook` should reach the stream behind `ptr` (a [`FilterInstance`] or
/// [`IDLE_STREAM`]).
///
/// # Safety
/// `ptr` is non-null and what `filter_new` returned, not yet destroyed.
pub(crate) unsafe fn wants(ptr: *const std::ffi::c_void, hook: Hook) -> bool {
    // SAFETY: both kinds of stream pointer start with the hook mask byte (the contract above);
    // the byte is only written through `Cell::set` on this thread, never while this reads it.
    let mask = unsafe { *ptr.cast::<u8>() };
    mask & hook.bit() != 0
}

struct FilterState {
    /// The filter, in the same allocation as this state ([`Stream`]). None when the module's
    /// `new_filter` panicked: the stream is answered 500 at its first hook.
    filter: Option<std::ptr::NonNull<dyn HttpFilter>>,
    /// Set by [`new_filter`] before Envoy sees the instance.
    shared: Option<Arc<ConfigShared>>,
    /// Set after a panic: later hooks of this stream do nothing and return Continue.
    poisoned: bool,
}

/// The per-stream hooks, for messages and for deciding how to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    StreamComplete,
}

impl Hook {
    fn bit(self) -> u8 {
        match self {
            Hook::RequestHeaders => Hooks::REQUEST_HEADERS,
            Hook::RequestBody => Hooks::REQUEST_BODY,
            Hook::RequestTrailers => Hooks::REQUEST_TRAILERS,
            Hook::ResponseHeaders => Hooks::RESPONSE_HEADERS,
            Hook::ResponseBody => Hooks::RESPONSE_BODY,
            Hook::ResponseTrailers => Hooks::RESPONSE_TRAILERS,
            Hook::StreamComplete => Hooks::STREAM_COMPLETE,
        }
        .bits()
    }

    fn name(self) -> &'static str {
        match self {
            Hook::RequestHeaders => "on_request_headers",
            Hook::RequestBody => "on_request_body",
            Hook::RequestTrailers => "on_request_trailers",
            Hook::ResponseHeaders => "on_response_headers",
            Hook::ResponseBody => "on_response_body",
            Hook::ResponseTrailers => "on_response_trailers",
            Hook::StreamComplete => "on_stream_complete",
        }
    }
}

pub(crate) fn new_filter(config: &ConfigInstance) -> NewFilter {
    let mut stream = match caught(|| config.factory.new_stream_filter()) {
        Ok(stream) => stream,
        Err(msg) => {
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: filter '{}' panicked in new_filter: {msg}; the stream will be answered 500",
                    config.shared.name
                ),
            );
            NewFilter::failed()
        }
    };
    let state = stream.state_mut();
    state.shared = Some(config.shared.clone());
    // A filter that failed to be created (or to say what it needs) answers 500 at whichever
    // hook comes first, or is simply asked every hook.
    let hooks = state.filter.map_or(Hooks::ALL, |filter| {
        // SAFETY: the filter lives in the stream's allocation, which `stream` owns exclusively.
        let filter = unsafe { filter.as_ref() };
        caught(|| filter.hooks()).unwrap_or(Hooks::ALL)
    });
    stream.hooks.set(hooks.bits());
    stream
}

/// Run one per-stream callback behind the panic barrier.
///
/// A panic poisons the stream (later hooks return `pass` without calling the filter), is counted
/// and logged, and is answered with a 500 local reply (details [`PANIC_DETAILS`]) from every hook
/// but `on_stream_complete`. On the response path Envoy itself decides: it sends the 500 if the
/// response headers have not gone downstream yet, and resets the stream otherwise.
pub(crate) fn run<R>(
    instance: &FilterInstance,
    envoy: &mut dyn EnvoyHttpFilter,
    hook: Hook,
    pass: R,
    fail: R,
    call: impl FnOnce(&mut dyn HttpFilter, &mut dyn EnvoyHttpFilter) -> R,
) -> R {
    if instance.busy.replace(true) {
        return pass;
    }
    struct Release<'a>(&'a Cell<bool>);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    let _release = Release(&instance.busy);
    let destroy_pending = &instance.destroy_pending;
    // SAFETY: `busy` was false and is now held until `_release` drops, so no other reference to
    // the state exists; Envoy drives one stream from one thread, and `FilterInstance` is !Sync.
    let hooks = &instance.hooks;
    let instance = unsafe { &mut *instance.state.get() };
    if instance.poisoned {
        return pass;
    }
    // SAFETY: the filter lives in the instance's own allocation, and `busy` (held) makes this the
    // only reference to it.
    let Some(filter) = instance.filter.map(|f| unsafe { &mut *f.as_ptr() }) else {
        instance.poisoned = true;
        hooks.set(Hooks::NONE.bits());
        // The panic in `new_filter` was logged there; count it once the stream can be reached.
        if let Some(counter) = instance.shared.as_ref().and_then(|s| s.panic_counter) {
            envoy.increment_counter(counter, 1);
        }
        if hook == Hook::StreamComplete {
            return pass;
        }
        fail_closed(envoy);
        return fail;
    };
    match caught(|| {
        let r = call(&mut *filter, &mut *envoy);
        if !destroy_pending.get() {
            hooks.set(filter.hooks().bits());
        }
        r
    }) {
        Ok(r) => r,
        Err(msg) => {
            instance.poisoned = true;
            hooks.set(Hooks::NONE.bits());
            let name = instance.shared.as_ref().map_or("?", |s| s.name.as_str());
            if let Some(counter) = instance.shared.as_ref().and_then(|s| s.panic_counter) {
                envoy.increment_counter(counter, 1);
            }
            if hook == Hook::StreamComplete {
                log(
                    LogLevel::Error,
                    &format!(
                        "rust_module: filter '{}' panicked in {}: {msg}",
                        name,
                        hook.name()
                    ),
                );
                return pass;
            }
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: filter '{}' panicked in {}: {msg}; failing the stream closed (500, or a reset once the response has started)",
                    name,
                    hook.name()
                ),
            );
            fail_closed(envoy);
            fail
        }
    }
}

fn fail_closed(envoy: &mut dyn EnvoyHttpFilter) {
    envoy.send_local_reply(500, &[], b"", PANIC_DETAILS);
}
