//! The per-thread cache of freed stream blocks: a stream's allocation is taken from and given back
//! here rather than from Envoy's allocator each time.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;

/// Freed stream allocations this thread keeps for its next streams, at most.
pub(super) const KEPT_STREAMS: usize = 32;

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
pub(super) fn take_stream_memory(layout: Layout) -> NonNull<u8> {
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
pub(super) unsafe fn keep_stream_memory(block: NonNull<u8>, layout: Layout) {
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

/// How many freed blocks this thread keeps now.
#[cfg(test)]
pub(super) fn kept_blocks() -> usize {
    STREAM_MEMORY.with(|memory| memory.borrow().0.len())
}
