//! Panics at the boundary into Envoy: the panic hook that routes messages into Envoy's log, the
//! catch around every hook, and the last-resort barriers of the SDK's own code.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use crate::api::LogLevel;
use crate::log;

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
