//! The local server's allocator, mimalloc (its binaries declare it), and the one setting of it
//! that the server changes.
//!
//! mimalloc gives memory that has stayed free for a while back to the OS (a *purge*), by
//! default after about a second. Under load, memory is freed in bursts and wanted again soon
//! after (a checkpoint drops the journal's pages, tantivy a segment's buffers), so every purge
//! came back as page faults, each zeroing a fresh page (often a 2 MiB huge page): a run of
//! `im-bench send` took 43,000 faults, and perf put 5-6% of the request workers' and the commit
//! thread's CPU in them. Kept for ten seconds, freed memory is reused under load and still
//! returned once the server goes quiet (9,700 faults for the same run; 2,000 if never returned).

use std::ffi::{c_int, c_long};

/// How long freed memory is kept, in milliseconds.
const PURGE_DELAY_MS: c_long = 10_000;

/// `mi_option_purge_delay` in `mimalloc.h` (the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    /// Part of mimalloc's C API, linked in with the allocator (`libmimalloc-sys`).
    fn mi_option_set(option: c_int, value: c_long);
}

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` says otherwise. Call it first thing in
/// `main` (before any thread is started) of a binary whose global allocator is
/// `mimalloc::MiMalloc`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options (any value is valid), first thing in `main`,
        // before this process has other threads to read it.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}
