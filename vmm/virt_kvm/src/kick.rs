//! Getting a vCPU thread out of `KVM_RUN` from another thread.
//!
//! KVM's documented way (Documentation/virt/kvm/api.rst, `immediate_exit`): send the vCPU
//! thread a signal whose handler sets `kvm_run.immediate_exit`. If the thread is inside
//! `KVM_RUN` (running or halted), the signal makes it return `EINTR`; if it is about to enter,
//! the flag makes `KVM_RUN` return at once. The vCPU loop clears the flag, then looks at what
//! the kicker wanted (stop, an ExtINT to inject) before it enters again.

use std::cell::Cell;
use std::sync::OnceLock;

use parking_lot::Mutex;

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads (the first real-time signal the C library leaves to
/// applications).
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {
    let p = IMMEDIATE_EXIT.with(Cell::get);
    if !p.is_null() {
        // SAFETY: the pointer is set by `VcpuThreadGuard` to a field of the kvm_run mapping of
        // the vCPU this very thread is running, and cleared before that mapping goes away. The
        // handler interrupts this thread, so no other code on it runs concurrently; the kernel
        // reads the field only at the next KVM_RUN.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

/// Installs the kick handler (once per process).
pub(crate) fn install() -> std::io::Result<()> {
    static RESULT: OnceLock<i32> = OnceLock::new();
    let errno = *RESULT.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is an
        // `extern "C" fn(c_int)` that only touches a thread-local pointer (async-signal-safe).
        // SA_RESTART keeps other system calls on vCPU threads from failing with EINTR; KVM_RUN
        // returns EINTR regardless.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut())
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL)
        }
    });
    match errno {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Which thread runs a VP right now, so others can kick it.
#[derive(Default)]
pub(crate) struct VpThread {
    thread: Mutex<Option<libc::pthread_t>>,
}

impl VpThread {
    /// Signals the thread running this VP, if any.
    pub(crate) fn kick(&self) {
        let t = self.thread.lock();
        if let Some(thread) = *t {
            // SAFETY: `thread` is registered by a live `VcpuThreadGuard` and unregistered (under
            // this lock) before that thread leaves `run`, so it names a running thread.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

/// Registers the current thread as running a VP for as long as the guard lives.
pub(crate) struct VcpuThreadGuard<'a> {
    vp: &'a VpThread,
}

impl<'a> VcpuThreadGuard<'a> {
    /// `immediate_exit` must point into the kvm_run mapping of the vCPU this thread runs, which
    /// must outlive the guard.
    pub(crate) fn new(vp: &'a VpThread, immediate_exit: *mut u8) -> Self {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        // SAFETY: pthread_self has no preconditions.
        *vp.thread.lock() = Some(unsafe { libc::pthread_self() });
        Self { vp }
    }
}

impl Drop for VcpuThreadGuard<'_> {
    fn drop(&mut self) {
        *self.vp.thread.lock() = None;
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}
