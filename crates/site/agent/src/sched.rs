//! Thread scheduling the standard library does not offer: the proxyDHCP thread asks to run
//! before ordinary threads (issue 19). Two system calls, so this module allows `unsafe`.
#![allow(unsafe_code)]

/// Moves the calling thread to SCHED_FIFO priority 1, the lowest real-time priority, with
/// SCHED_RESET_ON_FORK so threads and processes it starts get the ordinary scheduler back.
/// Fails with EPERM without CAP_SYS_NICE (or an RLIMIT_RTPRIO of at least 1).
pub fn realtime_current_thread() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which only reads it;
    // pid 0 means the calling thread.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The shortest time slice Linux lets an ordinary thread ask for.
pub const SHORT_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// `struct sched_attr` as `sched_setattr(2)` reads it (the first version, 48 bytes; the
/// kernel accepts any size it knows and zero-extends).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Keeps the calling thread on the ordinary scheduler (SCHED_OTHER, its nice unchanged) but
/// asks for a 0.1 ms time slice. Since Linux 6.12 (EEVDF's custom slices) a waking thread
/// whose slice is shorter than the running one's gets the core at once instead of when the
/// running thread's slice ends; no capability is needed. Older kernels accept the call and
/// ignore the slice, so success does not prove the effect: the benchmark does.
pub fn short_slice_current_thread() -> std::io::Result<()> {
    // SAFETY: getpriority only reads its arguments; errno tells a -1 result apart.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let errno = std::io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error() != Some(0) {
        return Err(errno);
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        // getpriority(PRIO_PROCESS, 0) answers for the calling thread on Linux.
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: SHORT_SLICE.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid, fully initialised sched_attr of the size it states, which
    // outlives the call; the kernel only reads it. pid 0 is the calling thread, flags 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    /// It either works (a privileged test run) or says why not; the thread is gone afterwards.
    #[test]
    fn asks_for_realtime_or_says_why_not() {
        let result = std::thread::spawn(super::realtime_current_thread)
            .join()
            .expect("thread");
        if let Err(e) = result {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        }
    }

    /// The slice is granted (Linux shows it as `se.slice` in nanoseconds where it has custom
    /// slices) and the thread stays on the ordinary scheduler.
    #[test]
    fn a_short_slice_is_granted_on_the_ordinary_scheduler() {
        let (policy, sched) = std::thread::spawn(|| {
            super::short_slice_current_thread().expect("sched_setattr");
            // SAFETY: no arguments but the calling thread's id.
            let policy = unsafe { libc::sched_getscheduler(0) };
            let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default();
            (policy, sched)
        })
        .join()
        .expect("thread");
        assert_eq!(policy, libc::SCHED_OTHER);
        let slice = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_owned());
        match slice {
            Some(ns) => assert_eq!(ns, super::SHORT_SLICE.as_nanos().to_string()),
            None => eprintln!("this kernel does not show se.slice: the slice is not checked"),
        }
    }
}
