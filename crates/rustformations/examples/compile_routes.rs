//! Compiles N distinct per-route configs of issue 24's shape through the per-route callback and
//! reports the heap each one keeps (bytes and blocks) and what compiling cost (blocks allocated).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        LIVE_BLOCKS.fetch_add(1, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let configs: Vec<String> = (0..n).map(|i| format!(
            r#"{{"request": {{"set": [{{"name": "x-route", "value": "r{{{{ request_header(\"x-a\") }}}}"}}, {{"name": "x-b", "value": "{{% if request_header(\"x-c\") == \"1\" %}}one-{i}{{% else %}}other{{% endif %}}"}}]}}, "response": {{"set": [{{"name": "x-resp", "value": "{{{{ header(\":status\") }}}}-{{{{ substring(request_header(\":path\"), 0, 5) }}}}"}}]}}}}"#
        )).collect();
    let mut keep = Vec::with_capacity(n);
    keep.push(rust_module::new_per_route_config("rustformation", configs[0].as_bytes()).unwrap());
    let (b0, k0, a0) = (
        LIVE_BYTES.load(Relaxed),
        LIVE_BLOCKS.load(Relaxed),
        ALLOCATIONS.load(Relaxed),
    );
    let start = std::time::Instant::now();
    for c in &configs[1..] {
        keep.push(rust_module::new_per_route_config("rustformation", c.as_bytes()).unwrap());
    }
    let el = start.elapsed();
    let m = (n - 1) as f64;
    println!(
        "{} configs: {:.0} bytes and {:.1} blocks kept each, {:.1} allocations each, {:.2} us each",
        n,
        (LIVE_BYTES.load(Relaxed) - b0) as f64 / m,
        (LIVE_BLOCKS.load(Relaxed) - k0) as f64 / m,
        (ALLOCATIONS.load(Relaxed) - a0) as f64 / m,
        el.as_secs_f64() * 1e6 / m
    );
    std::mem::forget(keep);
}
