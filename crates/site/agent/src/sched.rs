//! Thread scheduling the standard library does not offer: the proxyDHCP thread asks to run
//! before ordinary threads (issue 19). One system call, so this module allows `unsafe`.
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
}
