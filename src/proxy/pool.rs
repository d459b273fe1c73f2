//! Per-worker pool of relay buffers. A connection holds a buffer only while bytes are in
//! flight through it, so idle connections cost no buffer memory.

use std::cell::RefCell;

/// Size of one relay buffer.
pub(crate) const BUFFER_SIZE: usize = 32 * 1024;
/// Buffers kept for reuse per worker; more are freed.
const MAX_POOLED: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer from this thread's pool, or a new one.
pub(crate) fn take() -> Box<[u8]> {
    POOL.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())
}

/// Returns a buffer to this thread's pool.
pub(crate) fn give(buffer: Box<[u8]>) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() < MAX_POOLED {
            pool.push(buffer);
        }
    });
}
