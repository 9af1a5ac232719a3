// Only `lean_allocator` calls into the allocator's C options.
#![allow(unsafe_code)]

/// mimalloc instead of glibc's malloc: the gateway allocates and frees per request on every
/// worker, where glibc's arenas spent about an eighth of its time under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's option numbers (`mi_option_e` in its `mimalloc.h`; libmimalloc-sys is pinned).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// With its defaults an idle `bootfleet up` held 62-67 MB under mimalloc instead of glibc's
/// 35. No transparent huge pages brought it to 43; committing on demand and returning freed
/// pages at once (not 10 ms later) to 36, at the same requests/s. The environment
/// (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`) still wins where it is set.
fn lean_allocator() {
    // mimalloc asks for transparent huge pages (madvise) for the arena it made before `main`:
    // each thread's first small page then faulted in 2 MiB. A server of many small objects gains
    // nothing from them.
    // SAFETY: prctl(2) with integer arguments only; it changes this process's THP policy.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    for (option, env, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: sets one of mimalloc's process-wide options, any value of which is valid
            // for these two, at the start of `main`, before the process starts another thread.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

fn main() -> std::process::ExitCode {
    lean_allocator();
    bootfleet::command::main()
}
