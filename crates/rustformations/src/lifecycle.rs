//! How many configs this process built and dropped, logged at debug level on each change, so a
//! config reload (RDS for per-route configs, LDS for filter configs) can be checked for leaks:
//! live = created - dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

use envoy_module::{HttpFilter, HttpFilterConfig, NewFilter};

pub struct Lifecycle {
    what: &'static str,
    created: AtomicUsize,
    dropped: AtomicUsize,
}

impl Lifecycle {
    const fn new(what: &'static str) -> Lifecycle {
        Lifecycle {
            what,
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    pub fn created(&self) {
        self.created.fetch_add(1, Ordering::Relaxed);
        self.log("created");
    }

    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.log("dropped");
    }

    fn log(&self, event: &str) {
        let created = self.created.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        envoy_module::log_debug!(
            "{} {event}: {created} created, {dropped} dropped, {} live",
            self.what,
            created.saturating_sub(dropped)
        );
    }
}

pub static ROUTE_CONFIGS: Lifecycle = Lifecycle::new("per-route config");
pub static FILTER_CONFIGS: Lifecycle = Lifecycle::new("filter config");

/// A filter config that is counted in [`FILTER_CONFIGS`] while it lives.
pub struct Counted(Box<dyn HttpFilterConfig>);

impl Counted {
    pub fn new(config: Box<dyn HttpFilterConfig>) -> Counted {
        FILTER_CONFIGS.created();
        Counted(config)
    }
}

impl HttpFilterConfig for Counted {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        self.0.new_filter()
    }

    fn new_stream_filter(&self) -> NewFilter {
        self.0.new_stream_filter()
    }

    fn stream_is_idle(&self) -> bool {
        self.0.stream_is_idle()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        FILTER_CONFIGS.dropped();
    }
}
