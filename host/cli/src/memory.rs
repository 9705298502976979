//! What `wisp serve` gives back to the system after start-up and after each
//! deploy (`HostConfig::release_memory`): the allocator's free memory, and
//! the pages of code and read-only data that were mapped to start.
//!
//! Why the second: an idle host kept nearly all of its 8.5 MiB of machine
//! code resident (x86_64, the runtime-only edge build), although serving
//! runs a small part of it. Start-up (argument parsing, opening the store,
//! loading every function, TLS set-up) touches code all over the binary,
//! and the kernel maps up to 64 KiB of cached file around each page fault,
//! so by the time the host serves most of `.text` is mapped, and stays so.
//! Unmapping the binary's (and its shared libraries') read-only segments
//! then leaves resident only what the host runs from there on: the pages
//! fault back in, from the page cache, as requests and idle threads touch
//! them (a few hundred minor faults, once). Those segments are never
//! written (the loader relocates only writable ones), so their pages are
//! the file's and nothing is lost.

/// Gives free heap memory back to the system, then unmaps read-only code
/// and data (see the module's documentation).
pub fn release() {
    #[cfg(feature = "jemalloc")]
    crate::jemalloc::release_jemalloc_memory();
    #[cfg(not(feature = "jemalloc"))]
    wisp_host::release_free_memory();
    unmap_read_only_segments();
}

/// `madvise(MADV_DONTNEED)` over every loaded object's `PT_LOAD` segments
/// that are not writable: the binary's code, read-only data and unwind
/// tables, and the same of libc and the other shared libraries. Only whole
/// pages inside a segment are touched, never one it shares with a writable
/// neighbour; the vDSO is left alone.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn unmap_read_only_segments() {
    // SAFETY: dl_iterate_phdr calls `each` with a valid `dl_phdr_info` for
    // every loaded object, its program headers valid for the call.
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        _data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: see above.
        let info = unsafe { &*info };
        if !info.dlpi_name.is_null() {
            // SAFETY: a loaded object's name, a C string.
            let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
            if name.to_bytes().starts_with(b"linux-") {
                return 0; // linux-vdso.so.1 (or linux-gate): the kernel's.
            }
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !page.is_power_of_two() {
            return 0;
        }
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: dlpi_phnum headers at dlpi_phdr.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 || ph.p_memsz == 0 {
                continue;
            }
            let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
            let end = start.wrapping_add(ph.p_memsz as usize);
            // Whole pages only: round the start up and the end down.
            let first = (start + page - 1) & !(page - 1);
            let last = end & !(page - 1);
            if last > first {
                // SAFETY: a range of this process's read-only file-backed
                // mappings, never written: dropping its pages loses nothing
                // (they read back from the file). Failure changes nothing.
                unsafe {
                    libc::madvise(
                        first as *mut libc::c_void,
                        last - first,
                        libc::MADV_DONTNEED,
                    );
                }
            }
        }
        0
    }
    // SAFETY: `each` is a valid callback; no data pointer is used.
    unsafe {
        libc::dl_iterate_phdr(Some(each), std::ptr::null_mut());
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap_read_only_segments() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// KiB of this executable's code resident, from /proc/self/smaps.
    fn resident_code_kib() -> u64 {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                ours = fields.get(1) == Some(&"r-xp") && fields.last() == Some(&exe);
            } else if ours && fields.first() == Some(&"Rss:") {
                kib += fields[1].parse::<u64>().unwrap();
            }
        }
        kib
    }

    #[test]
    fn unmaps_resident_code_and_the_code_runs_on() {
        let before = resident_code_kib();
        assert!(before > 0, "no resident code found for this executable");
        super::unmap_read_only_segments();
        let after = resident_code_kib();
        assert!(
            after < before,
            "resident code {before} KiB before, {after} KiB after"
        );
        // The pages come back as they are run.
        let s: String = (0..3).map(|i| format!("{i}")).collect();
        assert_eq!(s, "012");
        assert!(resident_code_kib() > 0);
    }
}
