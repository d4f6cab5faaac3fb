//! One KVM vCPU and its run loop.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION;
use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;
use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuExit;
use kvm_ioctls::VcpuFd;
use virt::ExitHandler;
use virt::Processor;
use virt::Registers;
use virt::SpecialRegisters;
use virt::VirtError;
use virt::VpExit;

use crate::convert;
use crate::host_error;
use crate::kick::VcpuThreadGuard;
use crate::partition::Inner;

/// `KVM_INTERRUPT` (`_IOW(KVMIO, 0x86, struct kvm_interrupt)`).
const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;
/// Vector of #BP.
const BP_VECTOR: u8 = 3;

/// A KVM vCPU.
pub struct KvmProcessor {
    vcpu: VcpuFd,
    index: u32,
    inner: Arc<Inner>,
}

/// What the run loop does after an exit, once the exit's borrow of `kvm_run` has ended.
enum After {
    Continue,
    Return(VpExit),
    InternalError,
}

impl KvmProcessor {
    pub(crate) fn new(vcpu: VcpuFd, index: u32, inner: Arc<Inner>) -> Self {
        Self { vcpu, index, inner }
    }

    /// Injects the PIC's vector if VP 0 can take it now; otherwise asks KVM for an exit when it
    /// can (split irqchip: KVM_INTERRUPT carries ExtINT vectors).
    fn prepare_extint(&mut self, exits: &dyn ExitHandler) -> Result<(), VirtError> {
        let asserted = self.inner.extint.load(Ordering::SeqCst);
        let ready = self.vcpu.get_kvm_run().ready_for_interrupt_injection != 0;
        let mut want_window = asserted;
        if asserted && ready {
            if let Some(vector) = exits.pic_acknowledge() {
                let irq = kvm_bindings::kvm_interrupt {
                    irq: u32::from(vector),
                };
                // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt` from the pointer, which
                // is valid for the call; the descriptor is a vCPU we own.
                let r = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
                if r != 0 {
                    return Err(VirtError::Host {
                        operation: "KVM_INTERRUPT",
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
            // The PIC may have another request behind this one.
            want_window = self.inner.extint.load(Ordering::SeqCst);
        }
        self.vcpu.get_kvm_run().request_interrupt_window = u8::from(want_window);
        Ok(())
    }

    fn internal_error(&mut self) -> Result<Option<VirtError>, VirtError> {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, whose union member is
        // `internal`; the emulation-failure view shares its first fields.
        let (suberror, ndata, data) = unsafe {
            let i = run.__bindgen_anon_1.internal;
            (i.suberror, i.ndata, i.data)
        };
        let mut bytes: Vec<u8> = Vec::new();
        if suberror == KVM_INTERNAL_ERROR_EMULATION {
            // SAFETY: as above; suberror 1 is documented to use the `emulation_failure` layout.
            let ef = unsafe { run.__bindgen_anon_1.emulation_failure };
            if ef.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 {
                // SAFETY: the flag says the instruction bytes are valid.
                let b = unsafe { ef.__bindgen_anon_1.__bindgen_anon_1 };
                let n = usize::from(b.insn_size).min(b.insn_bytes.len());
                bytes.extend_from_slice(&b.insn_bytes[..n]);
            }
        }
        if bytes.first() == Some(&0xcc) {
            self.complete_int3()?;
            return Ok(None);
        }
        let regs = self.vcpu.get_regs().ok();
        let sregs = self.vcpu.get_sregs().ok();
        let what = match suberror {
            1 => "emulation failure",
            2 => "simultaneous exceptions",
            3 => "delivery event via a non-MMIO/PIO exit",
            4 => "unexpected exit during event delivery",
            _ => "unknown",
        };
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let extra: Vec<String> = data
            .iter()
            .take(ndata as usize)
            .map(|d| format!("{d:#x}"))
            .collect();
        Ok(Some(VirtError::Internal(format!(
            "KVM internal error, suberror {suberror} ({what}), vp {} at rip={:#x} cs={:#x}{}{}",
            self.index,
            regs.map_or(0, |r| r.rip),
            sregs.map_or(0, |s| s.cs.selector),
            if hex.is_empty() {
                String::new()
            } else {
                format!(", instruction bytes {}", hex.join(" "))
            },
            if suberror != KVM_INTERNAL_ERROR_EMULATION && !extra.is_empty() {
                format!(", data {}", extra.join(" "))
            } else {
                String::new()
            }
        ))))
    }

    /// Finishes an `int3` KVM could not emulate: RIP past it, #BP injected (a trap, so the
    /// handler sees the return address after the instruction, as on hardware).
    fn complete_int3(&mut self) -> Result<(), VirtError> {
        let mut regs = self
            .vcpu
            .get_regs()
            .map_err(|e| host_error("KVM_GET_REGS", e))?;
        regs.rip = regs.rip.wrapping_add(1);
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| host_error("KVM_SET_REGS", e))?;
        let mut events = self
            .vcpu
            .get_vcpu_events()
            .map_err(|e| host_error("KVM_GET_VCPU_EVENTS", e))?;
        events.exception.injected = 1;
        events.exception.nr = BP_VECTOR;
        events.exception.has_error_code = 0;
        events.exception.pending = 0;
        events.exception.error_code = 0;
        events.flags = 0;
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(|e| host_error("KVM_SET_VCPU_EVENTS", e))?;
        tracing::trace!(vp = self.index, rip = regs.rip, "int3 completed by the VMM");
        Ok(())
    }
}

impl Processor for KvmProcessor {
    fn index(&self) -> u32 {
        self.index
    }

    fn registers(&mut self) -> Result<Registers, VirtError> {
        self.vcpu
            .get_regs()
            .map(|r| convert::regs_from_kvm(&r))
            .map_err(|e| host_error("KVM_GET_REGS", e))
    }

    fn set_registers(&mut self, regs: &Registers) -> Result<(), VirtError> {
        self.vcpu
            .set_regs(&convert::regs_to_kvm(regs))
            .map_err(|e| host_error("KVM_SET_REGS", e))
    }

    fn special_registers(&mut self) -> Result<SpecialRegisters, VirtError> {
        self.vcpu
            .get_sregs()
            .map(|s| convert::sregs_from_kvm(&s))
            .map_err(|e| host_error("KVM_GET_SREGS", e))
    }

    fn set_special_registers(&mut self, sregs: &SpecialRegisters) -> Result<(), VirtError> {
        let base = self
            .vcpu
            .get_sregs()
            .map_err(|e| host_error("KVM_GET_SREGS", e))?;
        self.vcpu
            .set_sregs(&convert::sregs_to_kvm(sregs, &base))
            .map_err(|e| host_error("KVM_SET_SREGS", e))
    }

    fn run(&mut self, exits: &dyn ExitHandler) -> Result<VpExit, VirtError> {
        let inner = self.inner.clone();
        let vp = self.index;
        let run_ptr: *mut kvm_run = self.vcpu.get_kvm_run();
        // SAFETY: `run_ptr` points to this vCPU's kvm_run mapping, which lives as long as
        // `self.vcpu`, i.e. longer than the guard created here and dropped at return.
        let immediate_exit = unsafe { &raw mut (*run_ptr).immediate_exit };
        let _guard = VcpuThreadGuard::new(&inner.vps[vp as usize], immediate_exit);
        loop {
            // SAFETY: as above; only this thread (and its own signal handler) writes the field.
            unsafe { std::ptr::write_volatile(immediate_exit, 0) };
            std::sync::atomic::fence(Ordering::SeqCst);
            if inner.stopped.load(Ordering::SeqCst) {
                return Ok(VpExit::Stopped);
            }
            if vp == 0 {
                self.prepare_extint(exits)?;
            }
            let after = match self.vcpu.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoIn(port, data) => {
                        // SAFETY: the exit reason is KVM_EXIT_IO, whose union member is `io`.
                        let size = usize::from(unsafe { (*run_ptr).__bindgen_anon_1.io.size });
                        for chunk in data.chunks_mut(size.max(1)) {
                            exits.pio_read(vp, port, chunk);
                        }
                        After::Continue
                    }
                    VcpuExit::IoOut(port, data) => {
                        // SAFETY: as for IoIn.
                        let size = usize::from(unsafe { (*run_ptr).__bindgen_anon_1.io.size });
                        for chunk in data.chunks(size.max(1)) {
                            exits.pio_write(vp, port, chunk);
                        }
                        After::Continue
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        exits.mmio_read(vp, addr, data);
                        After::Continue
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        exits.mmio_write(vp, addr, data);
                        After::Continue
                    }
                    VcpuExit::X86Rdmsr(msr) => {
                        match exits.msr_read(vp, msr.index) {
                            Some(v) => {
                                *msr.data = v;
                                *msr.error = 0;
                            }
                            None => *msr.error = 1,
                        }
                        After::Continue
                    }
                    VcpuExit::X86Wrmsr(msr) => {
                        *msr.error = u8::from(!exits.msr_write(vp, msr.index, msr.data));
                        After::Continue
                    }
                    VcpuExit::IoapicEoi(vector) => {
                        exits.eoi(vector);
                        After::Continue
                    }
                    VcpuExit::IrqWindowOpen | VcpuExit::Intr | VcpuExit::Debug(_) => {
                        After::Continue
                    }
                    VcpuExit::Shutdown => After::Return(VpExit::TripleFault),
                    VcpuExit::InternalError => After::InternalError,
                    VcpuExit::FailEntry(reason, cpu) => {
                        return Err(VirtError::Internal(format!(
                            "KVM entry failed: hardware reason {reason:#x} on host cpu {cpu}"
                        )));
                    }
                    other => {
                        return Err(VirtError::Internal(format!(
                            "unexpected KVM exit on vp {vp}: {other:?}"
                        )));
                    }
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => After::Continue,
                Err(e) => return Err(host_error("KVM_RUN", e)),
            };
            match after {
                After::Continue => {}
                After::Return(r) => return Ok(r),
                After::InternalError => {
                    if let Some(err) = self.internal_error()? {
                        return Err(err);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_numbers() {
        // _IOW(type, nr, size) = 1 << 30 | size << 16 | type << 8 | nr
        let iow =
            |nr: libc::c_ulong, size: libc::c_ulong| (1 << 30) | (size << 16) | (0xae << 8) | nr;
        assert_eq!(super::KVM_INTERRUPT, iow(0x86, 4));
        assert_eq!(crate::partition::KVM_GET_TSC_KHZ, (0xae << 8) | 0xa3);
    }
}
