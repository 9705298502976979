//! jemalloc as the binary's allocator, its settings, and giving its free
//! memory back to the system (compiled with the `jemalloc` feature, on by
//! default).

/// jemalloc instead of glibc's malloc: the store (sled clones and frees a
/// tree node on every write) and the per-request instance set-up make many
/// small, short-lived allocations across threads, and glibc spent a fifth
/// of the event plane's CPU consolidating its free lists (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main` (`MALLOC_CONF` in the
/// environment overrides them): two arenas, so that the serving threads do
/// not queue on one arena's lock (with one, hello cost ~12% more CPU per
/// request), instead of jemalloc's default of four per CPU, which idle
/// memory pays for on small devices; unused pages go back to the system
/// after a second, from jemalloc's own background thread, so an idle host
/// shrinks back.
///
/// jemalloc reads it under the name its own functions have: `malloc_conf`
/// where it replaces the system's `malloc` (Linux and most others), and
/// `_rjem_malloc_conf` (with the variable `_RJEM_MALLOC_CONF`) on the
/// targets where tikv-jemalloc-sys keeps it prefixed.
#[allow(unsafe_code)]
#[cfg_attr(
    not(any(
        target_vendor = "apple",
        target_os = "android",
        target_os = "dragonfly"
    )),
    unsafe(export_name = "malloc_conf")
)]
#[cfg_attr(
    any(
        target_vendor = "apple",
        target_os = "android",
        target_os = "dragonfly"
    ),
    unsafe(export_name = "_rjem_malloc_conf")
)]
static MALLOC_CONF: JemallocConf =
    JemallocConf(c"narenas:2,background_thread:true,dirty_decay_ms:1000".as_ptr());

/// Gives jemalloc's free memory back to the system now (the host calls it
/// after start-up and after deploys, see `HostConfig::release_memory`): the
/// calling thread's cache of freed blocks goes back to its arena, and every
/// arena's unused pages to the system. Without it, what start-up freed
/// stayed resident (~0.9 MiB of an idle host's 6 MiB of heap): a thread
/// that goes quiet after start-up never trims its cache, and the decay
/// left part of the freed pages mapped.
#[allow(unsafe_code)]
pub fn release_jemalloc_memory() {
    for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
        // SAFETY: both are jemalloc controls without arguments or results
        // (4096 is MALLCTL_ARENAS_ALL); the name is a C string literal.
        let failed = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        } != 0;
        if failed {
            tracing::debug!(control = ?name, "jemalloc control failed");
        }
    }
}

/// A C string pointer that can live in a `static`.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: it points at a string literal, immutable for the whole program.
#[allow(unsafe_code)]
unsafe impl Sync for JemallocConf {}
