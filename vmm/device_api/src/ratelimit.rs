//! Rate limiting for log lines the guest can trigger at will (device models, Hyper-V, VMBus).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// Lets through at most `burst` events per `period`; a `static` per call site.
#[derive(Debug)]
pub struct RateLimiter {
    /// Window start (ms since the first event) << 16 | events in the window.
    state: AtomicU64,
    start: std::sync::OnceLock<Instant>,
    burst: u16,
    period: Duration,
}

impl RateLimiter {
    /// A limiter allowing `burst` events per `period`.
    pub const fn new(burst: u16, period: Duration) -> Self {
        Self {
            state: AtomicU64::new(0),
            start: std::sync::OnceLock::new(),
            burst,
            period,
        }
    }

    /// Whether this event may be logged.
    pub fn allow(&self) -> bool {
        let start = *self.start.get_or_init(Instant::now);
        let now_ms = start.elapsed().as_millis() as u64;
        let period_ms = self.period.as_millis() as u64;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (window, count) = (cur >> 16, cur & 0xffff);
            let (next, allowed) = if now_ms.saturating_sub(window) >= period_ms {
                ((now_ms << 16) | 1, true)
            } else if count < u64::from(self.burst) {
                (cur + 1, true)
            } else {
                return false;
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return allowed,
                Err(now) => cur = now,
            }
        }
    }
}

/// `tracing::warn!`, at most 10 times per 5 seconds per call site.
#[macro_export]
macro_rules! warn_ratelimited {
    ($($arg:tt)*) => {{
        static LIMIT: $crate::ratelimit::RateLimiter =
            $crate::ratelimit::RateLimiter::new(10, ::std::time::Duration::from_secs(5));
        if LIMIT.allow() {
            ::tracing::warn!($($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_blocks() {
        let l = RateLimiter::new(3, Duration::from_secs(3600));
        let allowed = (0..10).filter(|_| l.allow()).count();
        assert_eq!(allowed, 3);
    }
}
