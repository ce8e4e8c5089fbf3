//! The runtime behind fake Envoys: configs, streams, panics and fail-closed answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::stream_memory::{KEPT_STREAMS, kept_blocks};
use super::*;
use crate::api::{
    EnvoyFilterConfig, EnvoyHttpFilter, HeadersStatus, Hooks, HttpFilter, HttpFilterConfig, Module,
    PerRouteConfig,
};
use crate::testing::{FakeEnvoy, FakeFilterConfigEnvoy};
use crate::{PANIC_COUNTER, PANIC_DETAILS};

struct Panicky {
    calls: usize,
}
impl HttpFilter for Panicky {
    fn on_request_headers(&mut self, _e: &mut dyn EnvoyHttpFilter, _eos: bool) -> HeadersStatus {
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
    let kept = kept_blocks();
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
