//! Why a machine stopped, and how agar-vmm reports it (`docs/src/machine.md`, "Halt reasons
//! and exit codes").

use std::sync::Arc;

use device_api::HaltRequest;
use device_api::HaltSink;
use parking_lot::Condvar;
use parking_lot::Mutex;
use virt::Partition;

/// Why the machine stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaltReason {
    /// The guest powered off (ACPI S5 or another documented path).
    PowerOff,
    /// The guest reset the platform (agar-vmm does not restart the guest).
    Reset,
    /// A processor shut down.
    TripleFault {
        /// Which VP.
        vp: u32,
        /// Its RIP when it stopped, if it could be read.
        rip: Option<u64>,
    },
    /// The guest reported a crash.
    GuestCrash(String),
    /// The CPU backend cannot continue.
    BackendError(String),
}

impl HaltReason {
    /// The agar-vmm exit status for this reason.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::PowerOff => 0,
            Self::Reset => 3,
            Self::TripleFault { .. } => 4,
            Self::GuestCrash(_) => 5,
            Self::BackendError(_) => 6,
        }
    }

    /// The last log line agar-vmm prints.
    pub fn log_line(&self) -> String {
        let what = match self {
            Self::PowerOff => "power off".to_string(),
            Self::Reset => "reset".to_string(),
            Self::TripleFault { vp, rip } => match rip {
                Some(rip) => format!("triple fault at rip={rip:#x} (vp {vp})"),
                None => format!("triple fault (vp {vp})"),
            },
            Self::GuestCrash(s) if s.is_empty() => "guest crash".to_string(),
            Self::GuestCrash(s) => format!("guest crash {s}"),
            Self::BackendError(s) => format!("backend error: {s}"),
        };
        format!("agar-vmm: halt: {what}")
    }
}

impl From<HaltRequest> for HaltReason {
    fn from(r: HaltRequest) -> Self {
        match r {
            HaltRequest::PowerOff => Self::PowerOff,
            HaltRequest::Reset => Self::Reset,
            HaltRequest::GuestCrash(s) => Self::GuestCrash(s),
        }
    }
}

/// Records the first halt reason, stops the processors, and wakes whoever waits for it.
pub struct Halt {
    reason: Mutex<Option<HaltReason>>,
    cv: Condvar,
    partition: Arc<dyn Partition>,
}

impl Halt {
    /// A halt sink for `partition`.
    pub fn new(partition: Arc<dyn Partition>) -> Arc<Self> {
        Arc::new(Self {
            reason: Mutex::new(None),
            cv: Condvar::new(),
            partition,
        })
    }

    /// Records `reason` if it is the first, then stops every processor.
    pub fn halt(&self, reason: HaltReason) {
        {
            let mut r = self.reason.lock();
            if r.is_none() {
                tracing::debug!(?reason, "halt requested");
                *r = Some(reason);
            }
            self.cv.notify_all();
        }
        self.partition.stop();
    }

    /// The halt reason, once there is one.
    pub fn reason(&self) -> Option<HaltReason> {
        self.reason.lock().clone()
    }

    /// Blocks until a halt reason is recorded.
    pub fn wait(&self) -> HaltReason {
        let mut r = self.reason.lock();
        loop {
            if let Some(reason) = r.clone() {
                return reason;
            }
            self.cv.wait(&mut r);
        }
    }
}

impl HaltSink for Halt {
    fn request_halt(&self, request: HaltRequest) {
        self.halt(request.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_lines_match_machine_md() {
        let cases = [
            (HaltReason::PowerOff, 0, "agar-vmm: halt: power off"),
            (HaltReason::Reset, 3, "agar-vmm: halt: reset"),
            (
                HaltReason::TripleFault {
                    vp: 1,
                    rip: Some(0x1000),
                },
                4,
                "agar-vmm: halt: triple fault at rip=0x1000 (vp 1)",
            ),
            (
                HaltReason::GuestCrash("pvpanic: panicked".into()),
                5,
                "agar-vmm: halt: guest crash pvpanic: panicked",
            ),
            (
                HaltReason::BackendError("KVM internal error".into()),
                6,
                "agar-vmm: halt: backend error: KVM internal error",
            ),
        ];
        for (reason, code, line) in cases {
            assert_eq!(reason.exit_code(), code);
            assert_eq!(reason.log_line(), line);
        }
    }
}
