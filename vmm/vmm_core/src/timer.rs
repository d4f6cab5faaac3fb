//! The machine's timer thread: polls time-driven devices ([`device_api::Poll`]) at the
//! deadlines they return, and at once when one of them asks ([`device_api::PollWaker`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use device_api::Poll;
use device_api::PollWaker;
use device_api::Shared;
use device_api::VmClock;
use parking_lot::Condvar;
use parking_lot::Mutex;

/// Longest sleep without a deadline (the thread also wakes for every waker call and stop).
const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Default)]
struct WakeState {
    woken: bool,
    stop: bool,
}

#[derive(Default)]
struct Wake {
    state: Mutex<WakeState>,
    cv: Condvar,
}

impl Wake {
    fn wake(&self) {
        self.state.lock().woken = true;
        self.cv.notify_one();
    }
}

/// The devices the timer thread polls, before it starts.
#[derive(Default)]
pub struct Poller {
    devices: Vec<Shared<dyn Poll>>,
    wake: Arc<Wake>,
}

/// The running timer thread.
pub struct PollerThread {
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// No devices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device.
    pub fn add(&mut self, device: Shared<dyn Poll>) {
        self.devices.push(device);
    }

    /// A waker that makes the thread poll every device soon.
    pub fn waker(&self) -> PollWaker {
        let wake = self.wake.clone();
        PollWaker::new(move || wake.wake())
    }

    /// Polls every device once at `now_ns`; returns the earliest deadline.
    fn poll_all(devices: &[Shared<dyn Poll>], now_ns: u64) -> Option<u64> {
        devices.iter().filter_map(|d| d.lock().poll(now_ns)).min()
    }

    /// Starts the thread. If a device panics while polled, the thread calls `on_panic` with the
    /// message and stops polling.
    pub fn start(
        self,
        clock: VmClock,
        on_panic: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<PollerThread> {
        let wake = self.wake.clone();
        let devices = self.devices;
        let thread = std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || {
                loop {
                    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        Self::poll_all(&devices, clock.now_ns())
                    }));
                    let next = match polled {
                        Ok(next) => next,
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "(no message)".into());
                            on_panic(format!("timer thread: a device panicked: {msg}"));
                            return;
                        }
                    };
                    let mut s = wake.state.lock();
                    if s.stop {
                        return;
                    }
                    if !s.woken {
                        let wait = match next {
                            Some(t) => Duration::from_nanos(t.saturating_sub(clock.now_ns()))
                                .min(IDLE_WAIT),
                            None => IDLE_WAIT,
                        };
                        if !wait.is_zero() {
                            wake.cv.wait_for(&mut s, wait);
                        }
                    }
                    s.woken = false;
                    if s.stop {
                        return;
                    }
                }
            })?;
        Ok(PollerThread {
            wake: self.wake,
            thread: Some(thread),
        })
    }
}

impl PollerThread {
    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        {
            let mut s = self.wake.state.lock();
            s.stop = true;
            self.wake.cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PollerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use device_api::shared;

    use super::*;

    /// Fires every `period_ns`, counting how often it was due.
    struct Ticker {
        period_ns: u64,
        next: u64,
        fired: Arc<AtomicU32>,
    }

    impl Poll for Ticker {
        fn poll(&mut self, now_ns: u64) -> Option<u64> {
            while now_ns >= self.next {
                self.fired.fetch_add(1, Ordering::Relaxed);
                self.next += self.period_ns;
            }
            Some(self.next)
        }
    }

    /// Does nothing until woken, then records that it was polled.
    struct OnDemand {
        polls: Arc<AtomicU32>,
    }

    impl Poll for OnDemand {
        fn poll(&mut self, _now_ns: u64) -> Option<u64> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    struct Bomb;

    impl Poll for Bomb {
        fn poll(&mut self, _now_ns: u64) -> Option<u64> {
            panic!("tick bomb");
        }
    }

    #[test]
    fn a_panicking_device_is_reported() {
        let mut p = Poller::new();
        p.add(shared(Bomb));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = p
            .start(VmClock::new(), move |m| tx.send(m).unwrap())
            .unwrap();
        let msg = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(msg, "timer thread: a device panicked: tick bomb");
        t.stop();
    }

    #[test]
    fn polls_at_deadlines_and_on_wake() {
        let clock = VmClock::new();
        let fired = Arc::new(AtomicU32::new(0));
        let polls = Arc::new(AtomicU32::new(0));
        let mut p = Poller::new();
        p.add(shared(Ticker {
            period_ns: 2_000_000,
            next: 2_000_000,
            fired: fired.clone(),
        }));
        p.add(shared(OnDemand {
            polls: polls.clone(),
        }));
        let waker = p.waker();
        let mut t = p.start(clock.clone(), |m| panic!("{m}")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // The ticker counts every 2 ms period that fell due, so it soon reaches the 50 of
        // the first 100 ms (however late a loaded machine schedules the timer thread), and
        // it never counts a period before its deadline.
        let start = Instant::now();
        while fired.load(Ordering::Relaxed) < 50 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the ticker stalled"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = u64::from(fired.load(Ordering::Relaxed));
        let now = clock.now_ns();
        assert!(n <= now / 2_000_000, "fired {n} times in {now} ns");
        let before = polls.load(Ordering::Relaxed);
        waker.wake();
        let start = Instant::now();
        while polls.load(Ordering::Relaxed) == before {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        let start = Instant::now();
        t.stop();
        assert!(start.elapsed() < Duration::from_secs(1), "stop is prompt");
    }
}
