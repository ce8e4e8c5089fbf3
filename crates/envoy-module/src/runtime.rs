//! What the hooks do, independent of the C API family: building configs and filters, running the
//! module's callbacks behind a panic barrier, failing closed, and counting panics.

use std::alloc::Layout;
use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use crate::api::{
    CounterId, EnvoyFilterConfig, EnvoyHttpFilter, Hooks, HttpFilter, HttpFilterConfig, LogLevel,
    Module, PerRouteConfig,
};
use crate::{PANIC_COUNTER, PANIC_DETAILS, log};

/// Per-route configs of this module that Envoy holds. While there are none, no route can carry
/// one of ours, so a stream's per-route lookup answers None without calling into Envoy.
static LIVE_PER_ROUTE_CONFIGS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn per_route_config_created() {
    LIVE_PER_ROUTE_CONFIGS.fetch_add(1, Ordering::Release);
}

pub(crate) fn per_route_config_destroyed() {
    LIVE_PER_ROUTE_CONFIGS.fetch_sub(1, Ordering::Release);
}

pub(crate) fn any_per_route_config() -> bool {
    LIVE_PER_ROUTE_CONFIGS.load(Ordering::Acquire) > 0
}

/// What every stream of one filter config shares.
pub(crate) struct ConfigShared {
    pub(crate) name: String,
    pub(crate) panic_counter: Option<CounterId>,
}

/// The module side of an Envoy filter config (what `config_new` returns to Envoy).
pub(crate) struct ConfigInstance {
    factory: Box<dyn HttpFilterConfig>,
    shared: Arc<ConfigShared>,
}

impl ConfigInstance {
    /// The module's [`HttpFilterConfig::stream_is_idle`]; a panic counts as "not idle", so the
    /// stream gets a filter (whose creation is guarded and answers 500 if it panics too).
    pub(crate) fn stream_is_idle(&self) -> bool {
        caught(|| self.factory.stream_is_idle()).unwrap_or(false)
    }
}

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

/// Freed stream allocations this thread keeps for its next streams, at most.
const KEPT_STREAMS: usize = 32;

/// Memory of freed streams, by layout. A stream costs one allocation and one free from Envoy's
/// allocator; taking and giving back a block kept here costs a fraction of that. The blocks go
/// back to the allocator when the thread ends.
struct StreamMemory(Vec<(Layout, NonNull<u8>)>);

impl Drop for StreamMemory {
    fn drop(&mut self) {
        for (layout, block) in self.0.drain(..) {
            // SAFETY: each block was allocated with its layout and is owned by this cache alone.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static STREAM_MEMORY: RefCell<StreamMemory> = const { RefCell::new(StreamMemory(Vec::new())) };
}

/// A block for a stream of `layout`: one this thread kept, or a new one.
fn take_stream_memory(layout: Layout) -> NonNull<u8> {
    let kept = STREAM_MEMORY
        .try_with(|memory| {
            let mut memory = memory.borrow_mut();
            let i = memory.0.iter().rposition(|(l, _)| *l == layout)?;
            Some(memory.0.swap_remove(i).1)
        })
        .ok()
        .flatten();
    kept.unwrap_or_else(|| {
        // SAFETY: a stream's layout is never zero-sized (it holds a `FilterInstance`).
        let block = unsafe { std::alloc::alloc(layout) };
        NonNull::new(block).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
    })
}

/// Gives back a stream's block: kept for the thread's next stream, or freed.
///
/// # Safety
/// `block` came from [`take_stream_memory`] with `layout`, and nothing refers to it any more.
unsafe fn keep_stream_memory(block: NonNull<u8>, layout: Layout) {
    let kept = STREAM_MEMORY
        .try_with(|memory| {
            let mut memory = memory.borrow_mut();
            let room = memory.0.len() < KEPT_STREAMS;
            if room {
                memory.0.push((layout, block));
            }
            room
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: allocated with `layout` (the contract above), no longer used.
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
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

thread_local! {
    /// Message and location of the last panic caught on this thread, recorded by the panic hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Whether this thread entered the module through one of Envoy's hooks. Every hook runs its
    /// work behind a barrier, so on such a thread every panic is caught: the panic hook records it
    /// quietly. Set by [`guarded`] (config hooks, `filter_new`), which a worker passes through
    /// before any hook of a stream, so the stream hooks never touch the thread-local.
    static ENTERED: Cell<bool> = const { Cell::new(false) };
}

/// Route panic messages caught at the boundary into Envoy's log instead of raw stderr. Panics on
/// threads that never entered through a hook (threads the module spawned) still reach the previous
/// hook.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ENTERED.with(Cell::get) {
                let text = match info.location() {
                    Some(loc) => format!(
                        "{} at {}:{}",
                        payload_text(info.payload()),
                        loc.file(),
                        loc.line()
                    ),
                    None => payload_text(info.payload()),
                };
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Run `f`, catching a panic; the error is the panic's message (with location when known).
/// Marks the thread as entered through a hook, so the panic hook records quietly.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    ENTERED.with(|g| g.set(true));
    caught(f)
}

/// [`guarded`] for a thread already marked (the stream hooks, which only run on a worker after
/// `filter_new`): the same catch without touching the thread-local. Outside Envoy (unit tests),
/// a panic is still caught; the previous panic hook also reports it.
pub(crate) fn caught<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()))
    })
}

/// Envoy's metrics result for `define_counter` (Success=0, Frozen=3, ...) as our result.
pub(crate) fn counter_defined(name: &str, result: u32, id: usize) -> Result<CounterId, String> {
    match result {
        0 => Ok(CounterId(id)),
        3 => Err(format!(
            "counter '{name}': stats are frozen (define counters while the config loads)"
        )),
        other => Err(format!(
            "counter '{name}': Envoy answered metrics result {other}"
        )),
    }
}

/// Last-resort barrier for the SDK's own code in a hook: a panic here is logged and `default`
/// returned, so nothing ever unwinds into Envoy.
pub(crate) fn barrier<R>(hook: &str, default: R, f: impl FnOnce() -> R) -> R {
    answer(hook, default, guarded(f))
}

/// [`barrier`] for the stream hooks and `filter_destroy`, on a thread `filter_new` marked.
pub(crate) fn stream_barrier<R>(hook: &str, default: R, f: impl FnOnce() -> R) -> R {
    answer(hook, default, caught(f))
}

#[inline]
fn answer<R>(hook: &str, default: R, result: Result<R, String>) -> R {
    match result {
        Ok(r) => r,
        Err(msg) => {
            log_sdk_panic(hook, &msg);
            default
        }
    }
}

#[cold]
fn log_sdk_panic(hook: &str, msg: &str) {
    log(
        LogLevel::Error,
        &format!("rust_module: panic in SDK hook {hook}: {msg}"),
    );
}

/// `config_new`: validate the name, define the panic counter, run the module's factory.
pub(crate) fn new_config(
    module: &Module,
    envoy: &mut dyn EnvoyFilterConfig,
    name: &[u8],
    config: &[u8],
) -> Option<Box<ConfigInstance>> {
    let Ok(name) = std::str::from_utf8(name) else {
        log(
            LogLevel::Error,
            &format!(
                "rust_module: filter name {:?} is not valid UTF-8; config rejected",
                String::from_utf8_lossy(name)
            ),
        );
        return None;
    };
    let panic_counter = match envoy.define_counter(PANIC_COUNTER) {
        Ok(id) => Some(id),
        Err(e) => {
            log(
                LogLevel::Warn,
                &format!(
                    "rust_module: filter '{name}': cannot define counter {PANIC_COUNTER}: {e}"
                ),
            );
            None
        }
    };
    match guarded(|| (module.new_filter_config)(envoy, name, config)) {
        Ok(Ok(factory)) => Some(Box::new(ConfigInstance {
            factory,
            shared: Arc::new(ConfigShared {
                name: name.to_string(),
                panic_counter,
            }),
        })),
        Ok(Err(msg)) => {
            log(
                LogLevel::Error,
                &format!("rust_module: filter '{name}' rejected its config: {msg}"),
            );
            None
        }
        Err(msg) => {
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: filter '{name}' panicked while loading its config: {msg}; config rejected"
                ),
            );
            None
        }
    }
}

/// `per_route_config_new`: run the module's per-route factory.
pub(crate) fn new_per_route_config(
    module: &Module,
    name: &[u8],
    config: &[u8],
) -> Option<Box<PerRouteConfig>> {
    let Ok(name) = std::str::from_utf8(name) else {
        log(
            LogLevel::Error,
            &format!(
                "rust_module: per-route config name {:?} is not valid UTF-8; config rejected",
                String::from_utf8_lossy(name)
            ),
        );
        return None;
    };
    match guarded(|| (module.new_per_route_config)(name, config)) {
        Ok(Ok(cfg)) => Some(Box::new(cfg)),
        Ok(Err(msg)) => {
            log(
                LogLevel::Error,
                &format!("rust_module: per-route config '{name}' rejected its config: {msg}"),
            );
            None
        }
        Err(msg) => {
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: per-route config '{name}' panicked while loading: {msg}; config rejected"
                ),
            );
            None
        }
    }
}

/// `filter_new`: never fails; a panicking factory yields a filter that answers 500.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HeadersStatus, Module};
    use crate::testing::{FakeEnvoy, FakeFilterConfigEnvoy};

    struct Panicky {
        calls: usize,
    }
    impl HttpFilter for Panicky {
        fn on_request_headers(
            &mut self,
            _e: &mut dyn EnvoyHttpFilter,
            _eos: bool,
        ) -> HeadersStatus {
            self.calls += 1;
            panic!("boom");
        }
    }
    struct Factory(bool);
    impl HttpFilterConfig for Factory {
        fn new_filter(&self) -> Box<dyn HttpFilter> {
            if self.0 {
                panic!("factory boom");
            }
            Box::new(Panicky { calls: 0 })
        }
    }

    fn module_ok(
        envoy: &mut dyn EnvoyFilterConfig,
        name: &str,
        config: &[u8],
    ) -> Result<Box<dyn HttpFilterConfig>, String> {
        match (name, config) {
            ("bad", _) => Err("nope".into()),
            ("panic", _) => panic!("config boom"),
            (_, b"factory-panics") => Ok(Box::new(Factory(true))),
            _ => {
                envoy.define_counter("mine")?;
                Ok(Box::new(Factory(false)))
            }
        }
    }
    fn per_route(name: &str, _config: &[u8]) -> Result<PerRouteConfig, String> {
        if name == "bad" {
            Err("no".into())
        } else {
            Ok(Arc::new(1u8))
        }
    }
    const MODULE: Module = Module {
        new_filter_config: module_ok,
        new_per_route_config: per_route,
    };

    /// A headers hook through the barrier: Continue to pass, StopIteration to fail closed.
    fn headers_hook(
        instance: &FilterInstance,
        envoy: &mut FakeEnvoy,
        hook: Hook,
        call: impl FnOnce(&mut dyn HttpFilter, &mut dyn EnvoyHttpFilter) -> HeadersStatus,
    ) -> HeadersStatus {
        run(
            instance,
            envoy,
            hook,
            HeadersStatus::Continue,
            HeadersStatus::StopIteration,
            call,
        )
    }

    #[test]
    fn config_errors_panics_and_bad_names_reject() {
        let mut cfg = FakeFilterConfigEnvoy::new();
        assert!(new_config(&MODULE, &mut cfg, b"bad", b"").is_none());
        assert!(new_config(&MODULE, &mut cfg, b"panic", b"").is_none());
        assert!(new_config(&MODULE, &mut cfg, b"\xff\xfe", b"").is_none());
        assert!(new_config(&MODULE, &mut cfg, b"good", b"").is_some());
        assert!(cfg.counter_id(PANIC_COUNTER).is_some());
        assert!(cfg.counter_id("mine").is_some());
        assert!(new_per_route_config(&MODULE, b"bad", b"").is_none());
        assert!(new_per_route_config(&MODULE, b"\xff", b"").is_none());
        assert!(new_per_route_config(&MODULE, b"ok", b"").is_some());
    }

    #[test]
    fn a_panic_answers_500_counts_and_poisons_the_stream() {
        let mut cfg = FakeFilterConfigEnvoy::new();
        let config = new_config(&MODULE, &mut cfg, b"good", b"").unwrap();
        let panics = cfg.counter_id(PANIC_COUNTER).unwrap();
        let instance = new_filter(&config);
        let mut envoy = FakeEnvoy::new();
        let status = headers_hook(&instance, &mut envoy, Hook::RequestHeaders, |f, e| {
            f.on_request_headers(e, true)
        });
        assert_eq!(status, HeadersStatus::StopIteration);
        let reply = envoy.local_reply.clone().unwrap();
        assert_eq!((reply.status, reply.details.as_str()), (500, PANIC_DETAILS));
        assert_eq!(envoy.counter(panics), 1);
        // Poisoned: the filter is not called again and the hook passes.
        let mut called = false;
        let status = headers_hook(&instance, &mut envoy, Hook::ResponseHeaders, |_, _| {
            called = true;
            HeadersStatus::StopIteration
        });
        assert_eq!(status, HeadersStatus::Continue);
        assert!(!called);
        assert_eq!(envoy.counter(panics), 1);
    }

    #[test]
    fn a_panicking_factory_yields_a_filter_that_answers_500() {
        let mut cfg = FakeFilterConfigEnvoy::new();
        let config = new_config(&MODULE, &mut cfg, b"good", b"factory-panics").unwrap();
        let instance = new_filter(&config);
        let mut envoy = FakeEnvoy::new();
        let status = headers_hook(&instance, &mut envoy, Hook::RequestHeaders, |f, e| {
            f.on_request_headers(e, false)
        });
        assert_eq!(status, HeadersStatus::StopIteration);
        assert_eq!(envoy.local_reply.as_ref().unwrap().status, 500);
        assert_eq!(envoy.counter(cfg.counter_id(PANIC_COUNTER).unwrap()), 1);
    }

    /// The hook mask follows the filter's answer after creation and after each hook it ran, and
    /// a panic clears it, so Envoy's later hooks return before the barrier.
    #[test]
    fn the_hook_mask_follows_the_filter_and_a_panic_clears_it() {
        struct OneShot {
            done: bool,
        }
        impl HttpFilter for OneShot {
            fn on_request_headers(
                &mut self,
                _e: &mut dyn EnvoyHttpFilter,
                _eos: bool,
            ) -> HeadersStatus {
                self.done = true;
                HeadersStatus::Continue
            }
            fn hooks(&self) -> Hooks {
                if self.done {
                    Hooks::RESPONSE_HEADERS
                } else {
                    Hooks::REQUEST_HEADERS
                }
            }
        }
        struct OneShotFactory;
        impl HttpFilterConfig for OneShotFactory {
            fn new_filter(&self) -> Box<dyn HttpFilter> {
                Box::new(OneShot { done: false })
            }
        }
        let config = ConfigInstance {
            factory: Box::new(OneShotFactory),
            shared: Arc::new(ConfigShared {
                name: "one-shot".into(),
                panic_counter: None,
            }),
        };
        let instance = new_filter(&config);
        let ptr = (&*instance as *const FilterInstance).cast();
        // SAFETY: `ptr` points at the live instance above.
        let wants = |hook| unsafe { super::wants(ptr, hook) };
        assert!(wants(Hook::RequestHeaders) && !wants(Hook::ResponseHeaders));
        let mut envoy = FakeEnvoy::new();
        run(
            &instance,
            &mut envoy,
            Hook::RequestHeaders,
            (),
            (),
            |f, e| {
                f.on_request_headers(e, true);
            },
        );
        assert!(!wants(Hook::RequestHeaders) && wants(Hook::ResponseHeaders));
        assert!(!wants(Hook::RequestBody) && !wants(Hook::StreamComplete));

        // A panicking filter: every hook wanted at first, none after the panic.
        let mut cfg = FakeFilterConfigEnvoy::new();
        let panicky = new_config(&MODULE, &mut cfg, b"good", b"").unwrap();
        let instance = new_filter(&panicky);
        let ptr = (&*instance as *const FilterInstance).cast();
        // SAFETY: `ptr` points at the live instance above.
        let wants = |hook| unsafe { super::wants(ptr, hook) };
        assert!(wants(Hook::RequestHeaders) && wants(Hook::StreamComplete));
        headers_hook(&instance, &mut envoy, Hook::RequestHeaders, |f, e| {
            f.on_request_headers(e, true)
        });
        assert!(!wants(Hook::ResponseHeaders) && !wants(Hook::StreamComplete));
        // SAFETY: the idle stream's mask byte is a static.
        assert!(!unsafe { super::wants((&raw const IDLE_STREAM).cast(), Hook::RequestHeaders) });
    }

    /// Envoy destroying the stream from inside one of its hooks (a local reply that resets it)
    /// must not free the instance under the running hook: the destroy is left to the hook, and
    /// no later hook of the stream reaches the filter.
    #[test]
    fn a_destroy_during_a_hook_is_deferred_to_the_hook() {
        let mut cfg = FakeFilterConfigEnvoy::new();
        let config = new_config(&MODULE, &mut cfg, b"good", b"").unwrap();
        let instance = new_filter(&config);
        let mut envoy = FakeEnvoy::new();
        let status = headers_hook(&instance, &mut envoy, Hook::ResponseHeaders, |_, _| {
            assert!(!instance.destroy_now(), "a hook is running");
            HeadersStatus::StopIteration
        });
        assert_eq!(status, HeadersStatus::StopIteration);
        assert!(instance.destroyed_during_hook() && !instance.is_busy());
        let ptr = (&*instance as *const FilterInstance).cast();
        // SAFETY: `ptr` points at the live instance above.
        assert!(!unsafe { wants(ptr, Hook::ResponseBody) });
        // Outside a hook, a destroy frees at once.
        let idle = new_filter(&config);
        assert!(idle.destroy_now());
    }

    #[test]
    fn a_freed_stream_block_is_reused_by_the_next_stream_of_its_layout() {
        struct Small(#[allow(dead_code)] u8);
        impl HttpFilter for Small {}
        struct Large(#[allow(dead_code)] [u64; 64]);
        impl HttpFilter for Large {}
        let first = NewFilter::new(Small(1)).into_raw();
        // SAFETY: from `NewFilter`, freed once.
        unsafe { FilterInstance::free(first) };
        let large = NewFilter::new(Large([7; 64])).into_raw();
        assert_ne!(large, first, "another layout takes another block");
        let second = NewFilter::new(Small(2)).into_raw();
        assert_eq!(second, first, "the kept block of the same layout");
        // SAFETY: each from `NewFilter`, freed once.
        unsafe {
            FilterInstance::free(second);
            FilterInstance::free(large);
        }
        // Past the number kept, blocks go back to the allocator.
        let streams: Vec<_> = (0..KEPT_STREAMS + 8)
            .map(|i| NewFilter::new(Small(i as u8)).into_raw())
            .collect();
        for stream in streams {
            // SAFETY: each from `NewFilter`, freed once.
            unsafe { FilterInstance::free(stream) };
        }
        let kept = STREAM_MEMORY.with(|memory| memory.borrow().0.len());
        assert_eq!(kept, KEPT_STREAMS);
    }

    /// A filter built into the stream's allocation, and one boxed by the default
    /// `new_stream_filter`, are each reached by the hooks and dropped once, with the instance.
    #[test]
    fn a_stream_filter_is_dropped_once_with_its_instance() {
        use std::sync::atomic::AtomicUsize;
        struct Dropped(Arc<AtomicUsize>);
        impl HttpFilter for Dropped {
            fn on_request_headers(
                &mut self,
                _e: &mut dyn EnvoyHttpFilter,
                _eos: bool,
            ) -> HeadersStatus {
                HeadersStatus::StopIteration
            }
        }
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        struct Inline(Arc<AtomicUsize>);
        impl HttpFilterConfig for Inline {
            fn new_filter(&self) -> Box<dyn HttpFilter> {
                unreachable!("new_stream_filter is overridden")
            }
            fn new_stream_filter(&self) -> NewFilter {
                NewFilter::new(Dropped(self.0.clone()))
            }
        }
        struct Boxed(Arc<AtomicUsize>);
        impl HttpFilterConfig for Boxed {
            fn new_filter(&self) -> Box<dyn HttpFilter> {
                Box::new(Dropped(self.0.clone()))
            }
        }
        for inline in [true, false] {
            let drops = Arc::new(AtomicUsize::new(0));
            let factory: Box<dyn HttpFilterConfig> = if inline {
                Box::new(Inline(drops.clone()))
            } else {
                Box::new(Boxed(drops.clone()))
            };
            let config = ConfigInstance {
                factory,
                shared: Arc::new(ConfigShared {
                    name: "dropped".into(),
                    panic_counter: None,
                }),
            };
            let stream = new_filter(&config);
            let status = headers_hook(
                &stream,
                &mut FakeEnvoy::new(),
                Hook::RequestHeaders,
                |f, e| f.on_request_headers(e, true),
            );
            assert_eq!(status, HeadersStatus::StopIteration, "inline: {inline}");
            let raw = stream.into_raw();
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            // SAFETY: handed over by `into_raw` just above, freed once.
            unsafe { FilterInstance::free(raw) };
            assert_eq!(drops.load(Ordering::SeqCst), 1, "inline: {inline}");
            drop(new_filter(&config));
            assert_eq!(drops.load(Ordering::SeqCst), 2, "inline: {inline}");
        }
    }

    #[test]
    fn reentrant_hooks_pass_through() {
        let mut cfg = FakeFilterConfigEnvoy::new();
        let config = new_config(&MODULE, &mut cfg, b"good", b"").unwrap();
        let instance = new_filter(&config);
        let mut outer = FakeEnvoy::new();
        let inner_status = run(
            &instance,
            &mut outer,
            Hook::RequestHeaders,
            None,
            None,
            |_, _| {
                let mut inner = FakeEnvoy::new();
                Some(run(
                    &instance,
                    &mut inner,
                    Hook::ResponseHeaders,
                    1,
                    2,
                    |_, _| 3,
                ))
            },
        );
        assert_eq!(inner_status, Some(1));
    }
}
