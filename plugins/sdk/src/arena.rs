//! An arena allocator for plugins: allocation is a pointer bump, `dealloc` does nothing.
//!
//! The host runs every call in a fresh instance and resets its memory afterwards, so nothing
//! a plugin allocates outlives the call: freeing is wasted work. The canonical ABI calls the
//! guest's allocator once per string and list it passes in, so for a request of 100 members
//! the allocator is on the hot path of every call. A plugin opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: kvpilot_sdk::arena::Arena = kvpilot_sdk::arena::Arena;
//! ```
//!
//! It suits plugins whose allocations per call are bounded by the request; a plugin that
//! allocates and frees in a long loop should keep the default allocator, because the arena
//! only grows (up to the memory limit the host sets, after which the call fails cleanly).

/// WebAssembly page size.
pub const PAGE: usize = 64 * 1024;

/// Where an allocation of `size` bytes aligned to `align` (a power of two) starts in an arena
/// whose free space is `next..end`, and the new `next`; `None` if it does not fit.
pub fn bump(next: usize, end: usize, size: usize, align: usize) -> Option<(usize, usize)> {
    let start = next.checked_add(align - 1)? & !(align - 1);
    let new_next = start.checked_add(size)?;
    (new_next <= end).then_some((start, new_next))
}

/// Pages to grow by so that `size` more bytes (plus alignment slack) fit.
pub fn pages_for(size: usize, align: usize) -> Option<usize> {
    Some(size.checked_add(align)?.div_ceil(PAGE))
}

#[cfg(target_arch = "wasm32")]
pub use imp::{Arena, cabi_realloc};

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{PAGE, bump, pages_for};
    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    unsafe extern "C" {
        /// Set by the linker: where the data segments and the stack end and the heap starts.
        static __heap_base: u8;
    }

    /// The arena's free space: `NEXT..END`; `END == 0` until the first allocation. Guests are
    /// single-threaded (wasm32-wasip2 has no threads), so relaxed atomics are plain loads and
    /// stores.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static END: AtomicUsize = AtomicUsize::new(0);

    /// The bump allocator (see the module documentation).
    pub struct Arena;

    impl Arena {
        fn take(size: usize, align: usize) -> *mut u8 {
            let (mut next, mut end) = (NEXT.load(Relaxed), END.load(Relaxed));
            if end == 0 {
                // First use: the rest of the initial memory, after the heap base.
                next = core::ptr::addr_of!(__heap_base) as usize;
                end = core::arch::wasm32::memory_size(0) * PAGE;
                END.store(end, Relaxed);
            }
            if let Some((start, new_next)) = bump(next, end, size, align) {
                NEXT.store(new_next, Relaxed);
                return start as *mut u8;
            }
            let Some(pages) = pages_for(size, align) else {
                return core::ptr::null_mut();
            };
            let old = core::arch::wasm32::memory_grow(0, pages);
            if old == usize::MAX {
                return core::ptr::null_mut();
            }
            // New pages follow the current end of memory, which is the arena's end unless
            // something else grew memory; then the arena restarts at the new pages.
            let (base, grown_end) = (old * PAGE, (old + pages) * PAGE);
            let from = if end == base { next } else { base };
            match bump(from, grown_end, size, align) {
                Some((start, new_next)) => {
                    NEXT.store(new_next, Relaxed);
                    END.store(grown_end, Relaxed);
                    start as *mut u8
                }
                None => core::ptr::null_mut(),
            }
        }
    }

    /// The canonical ABI's `cabi_realloc` over the arena, for `#![no_std]` components (a std
    /// component gets one from std): what the host calls to place every string and list it
    /// passes in.
    ///
    /// # Safety
    /// `old_ptr` and `old_len` are 0 or an allocation of this arena, as the ABI guarantees.
    pub unsafe fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        let Ok(layout) = Layout::from_size_align(old_len, align) else {
            return core::ptr::null_mut();
        };
        if old_ptr.is_null() {
            return Arena::take(new_len, align);
        }
        // SAFETY: the caller passes an allocation of this arena with its layout.
        unsafe { Arena.realloc(old_ptr, layout, new_len) }
    }

    // SAFETY: `take` hands out disjoint, suitably aligned ranges of memory that nothing else
    // uses (past the linker's heap base, or pages it grew itself) and never hands out a range
    // twice, so no allocation can alias another.
    unsafe impl GlobalAlloc for Arena {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            Self::take(layout.size(), layout.align())
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // The last allocation grows (or shrinks) in place when the arena has room.
            if ptr as usize + layout.size() == NEXT.load(Relaxed)
                && let Some((_, new_next)) = bump(ptr as usize, END.load(Relaxed), new_size, 1)
            {
                NEXT.store(new_next, Relaxed);
                return ptr;
            }
            let new = Self::take(new_size, layout.align());
            if !new.is_null() {
                // SAFETY: both ranges are valid for the copied length, and `new` was just
                // taken from fresh arena space, so they do not overlap.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                }
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_aligns_and_refuses_what_does_not_fit() {
        assert_eq!(bump(0, 64, 10, 8), Some((0, 10)));
        assert_eq!(bump(10, 64, 8, 8), Some((16, 24)));
        assert_eq!(bump(10, 64, 1, 1), Some((10, 11)));
        assert_eq!(bump(60, 64, 8, 8), None, "64 + 8 > 64");
        assert_eq!(bump(56, 64, 8, 8), Some((56, 64)), "exactly full");
        assert_eq!(bump(usize::MAX - 2, usize::MAX, 1, 8), None, "no overflow");
    }

    #[test]
    fn growth_covers_the_request_and_its_alignment() {
        assert_eq!(pages_for(1, 1), Some(1));
        assert_eq!(pages_for(PAGE, 8), Some(2));
        assert_eq!(pages_for(PAGE * 5 - 8, 8), Some(5));
        assert_eq!(pages_for(usize::MAX, 8), None);
    }
}
