//! Received bytes on their way from a host thread into the UART.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

type Notify = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<u8>>,
    notify: Mutex<Option<Notify>>,
}

/// The receive side of a UART, shared between the device and whichever host thread produces
/// input (a console reader, a socket). Cloning gives another handle to the same queue.
///
/// The producer calls [`SerialInput::push`]; the device takes bytes from the queue only when
/// the machine polls it ([`device_api::Poll`]), paced at the programmed baud rate and never
/// beyond the receive FIFO's free space, so nothing the host sends is dropped. `push` (and the
/// device, when the guest frees FIFO space while input waits) calls the notify hook so the
/// machine polls the device soon.
#[derive(Clone, Default)]
pub struct SerialInput {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SerialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialInput")
            .field("pending", &self.pending())
            .finish()
    }
}

impl SerialInput {
    /// An empty queue with no notify hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the hook called when input is waiting and the device should be polled. It must not
    /// block and must not call into the device (it may run with the device locked).
    pub fn set_notify(&self, notify: impl Fn() + Send + Sync + 'static) {
        *self.shared.notify.lock() = Some(Arc::new(notify));
    }

    /// Queues received bytes and notifies the machine.
    pub fn push(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.shared.queue.lock().extend(bytes.iter().copied());
        self.notify();
    }

    /// Bytes queued and not yet taken by the device.
    pub fn pending(&self) -> usize {
        self.shared.queue.lock().len()
    }

    /// Takes up to `max` bytes, oldest first.
    pub(crate) fn take(&self, max: usize) -> Vec<u8> {
        let mut q = self.shared.queue.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    pub(crate) fn notify(&self) {
        let hook = self.shared.notify.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
    }
}
