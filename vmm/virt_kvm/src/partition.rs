//! A KVM VM: memory slots, the split irqchip, the MSR filter, interrupt delivery and stopping.

use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

use guest_mem::GuestMemory;
use guest_mem::RegionKind;
use kvm_bindings::KVM_IRQ_ROUTING_MSI;
use kvm_bindings::KVM_MEM_READONLY;
use kvm_bindings::KVM_MSR_EXIT_REASON_FILTER;
use kvm_bindings::KVM_MSR_EXIT_REASON_UNKNOWN;
use kvm_bindings::KvmIrqRouting;
use kvm_bindings::kvm_enable_cap;
use kvm_bindings::kvm_irq_routing_entry;
use kvm_bindings::kvm_irq_routing_msi;
use kvm_bindings::kvm_msi;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Cap;
use kvm_ioctls::Kvm;
use kvm_ioctls::MsrFilterDefaultAction;
use kvm_ioctls::MsrFilterRange;
use kvm_ioctls::MsrFilterRangeFlags;
use kvm_ioctls::VmFd;
use parking_lot::Mutex;
use virt::CpuidTable;
use virt::DeliveryMode;
use virt::InterruptRequest;
use virt::Partition;
use virt::PartitionConfig;
use virt::Processor;
use virt::VirtError;

use crate::IDENTITY_MAP_ADDR;
use crate::IOAPIC_ROUTES;
use crate::TSS_ADDR;
use crate::convert;
use crate::host_error;
use crate::kick;
use crate::kick::VpThread;
use crate::vcpu::KvmProcessor;

/// `KVM_GET_TSC_KHZ` (`_IO(KVMIO, 0xa3)`), issued on the VM descriptor.
pub(crate) const KVM_GET_TSC_KHZ: libc::c_ulong = 0xaea3;
/// Largest MSR count one filter range's bitmap covers (`KVM_MSR_FILTER_MAX_BITMAP_SIZE` bytes).
const MSR_FILTER_RANGE_MAX: u32 = 0x600 * 8;
/// Ranges one MSR filter holds (`KVM_MSR_FILTER_MAX_RANGES`).
const MSR_FILTER_MAX_RANGES: usize = 16;
/// KVM's local APIC timer runs at 1 GHz (one tick per nanosecond).
const APIC_TIMER_HZ: u64 = 1_000_000_000;

/// A KVM virtual machine.
pub struct KvmPartition {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) vm: VmFd,
    /// Keeps the host mapping behind the memory slots alive.
    _memory: GuestMemory,
    pub(crate) processor_count: u32,
    pub(crate) stopped: AtomicBool,
    /// The PIC's INTR output.
    pub(crate) extint: AtomicBool,
    pub(crate) vps: Vec<VpThread>,
    created: Mutex<Vec<bool>>,
    routes: Mutex<LevelRoutes>,
    tsc_khz: AtomicU32,
}

impl KvmPartition {
    pub(crate) fn new(kvm: Arc<Kvm>, config: PartitionConfig) -> Result<Self, VirtError> {
        kick::install().map_err(|source| VirtError::Host {
            operation: "installing the vCPU kick signal handler",
            source,
        })?;
        let max = kvm.get_max_vcpus().min(255) as u32;
        if config.processor_count == 0 || config.processor_count > max {
            return Err(VirtError::Unsupported(format!(
                "{} processors (KVM here allows 1..={max})",
                config.processor_count
            )));
        }
        let vm = kvm
            .create_vm()
            .map_err(|e| host_error("KVM_CREATE_VM", e))?;
        // Intel VMX needs these for real mode; other vendors reject or ignore them.
        if let Err(e) = vm.set_identity_map_address(IDENTITY_MAP_ADDR) {
            tracing::debug!(errno = e.errno(), "KVM_SET_IDENTITY_MAP_ADDR not accepted");
        }
        if let Err(e) = vm.set_tss_address(TSS_ADDR as usize) {
            tracing::debug!(errno = e.errno(), "KVM_SET_TSS_ADDR not accepted");
        }
        let mut cap = kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        cap.args[0] = u64::from(IOAPIC_ROUTES);
        vm.enable_cap(&cap)
            .map_err(|e| host_error("enabling KVM_CAP_SPLIT_IRQCHIP", e))?;
        let mut cap = kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
            ..Default::default()
        };
        cap.args[0] = u64::from(KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN);
        vm.enable_cap(&cap)
            .map_err(|e| host_error("enabling KVM_CAP_X86_USER_SPACE_MSR", e))?;
        set_msr_filter(&vm, &config.user_msrs)?;
        map_memory(&kvm, &vm, &config.memory)?;

        let mut khz: libc::c_int = -1;
        if kvm.check_extension_int(Cap::GetTscKhz) > 0 {
            // SAFETY: KVM_GET_TSC_KHZ takes no argument and returns the frequency or -1; the
            // descriptor is a VM we own.
            khz = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_GET_TSC_KHZ as _) };
        }
        let n = config.processor_count as usize;
        Ok(Self {
            inner: Arc::new(Inner {
                vm,
                _memory: config.memory,
                processor_count: config.processor_count,
                stopped: AtomicBool::new(false),
                extint: AtomicBool::new(false),
                vps: (0..n).map(|_| VpThread::default()).collect(),
                created: Mutex::new(vec![false; n]),
                routes: Mutex::new(LevelRoutes::default()),
                tsc_khz: AtomicU32::new(u32::try_from(khz).unwrap_or(0)),
            }),
        })
    }
}

fn map_memory(kvm: &Kvm, vm: &VmFd, memory: &GuestMemory) -> Result<(), VirtError> {
    let readonly = kvm.check_extension(Cap::ReadonlyMem);
    for (slot, r) in memory.regions().iter().enumerate() {
        let mut flags = 0;
        if r.kind == RegionKind::Rom {
            if readonly {
                flags |= KVM_MEM_READONLY;
            } else {
                tracing::warn!(gpa = r.gpa, "KVM lacks read-only memory: ROM is writable");
            }
        }
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: r.gpa,
            memory_size: r.len,
            userspace_addr: memory.host_base() as u64 + r.host_offset,
        };
        // SAFETY: the host range is part of `memory`'s mapping (regions lie inside it by
        // construction), and the partition keeps a clone of `memory` for as long as the VM
        // exists, so the mapping outlives the slot.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| host_error("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

fn set_msr_filter(vm: &VmFd, ranges: &[RangeInclusive<u32>]) -> Result<(), VirtError> {
    if ranges.is_empty() {
        return Ok(());
    }
    let mut pieces = Vec::new();
    for r in ranges {
        let mut base = *r.start();
        let end = *r.end();
        if end < base {
            continue;
        }
        loop {
            let count = (end - base).saturating_add(1).min(MSR_FILTER_RANGE_MAX);
            pieces.push((base, count));
            match base.checked_add(count) {
                Some(next) if next <= end && next != 0 => base = next,
                _ => break,
            }
        }
    }
    if pieces.len() > MSR_FILTER_MAX_RANGES {
        return Err(VirtError::Unsupported(format!(
            "user MSR ranges need {} filter ranges; KVM allows {MSR_FILTER_MAX_RANGES}",
            pieces.len()
        )));
    }
    // All-zero bitmaps: every MSR of each piece is denied, so KVM exits to user space.
    let bitmaps: Vec<Vec<u8>> = pieces
        .iter()
        .map(|&(_, count)| vec![0u8; count.div_ceil(8) as usize])
        .collect();
    let filter: Vec<MsrFilterRange<'_>> = pieces
        .iter()
        .zip(&bitmaps)
        .map(|(&(base, count), bitmap)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: count,
            bitmap,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &filter)
        .map_err(|e| host_error("KVM_X86_SET_MSR_FILTER", e))
}

/// The MSI message (address low, address high, data) for an interrupt request.
pub(crate) fn msi_message(req: &InterruptRequest) -> Option<(u32, u32, u32)> {
    let mode: u32 = match req.delivery_mode {
        DeliveryMode::Fixed => 0,
        DeliveryMode::LowestPriority => 1,
        DeliveryMode::Smi => 2,
        DeliveryMode::Nmi => 4,
        DeliveryMode::Init => 5,
        DeliveryMode::Startup => 6,
        DeliveryMode::ExtInt => return None,
    };
    let address_lo =
        0xfee0_0000 | ((req.destination & 0xff) << 12) | (u32::from(req.logical_destination) << 2);
    let address_hi = 0;
    let data =
        u32::from(req.vector) | (mode << 8) | (1 << 14) | (u32::from(req.level_triggered) << 15);
    Some((address_lo, address_hi, data))
}

/// Level-triggered messages the partition has sent, as MSI routes on the reserved IOAPIC
/// GSIs. KVM computes each vCPU's "EOI exits to user space" vector set from these routes, so a
/// vector appears there once its message has been seen.
#[derive(Default)]
struct LevelRoutes {
    entries: Vec<(u32, u32, u32)>,
    next_victim: usize,
}

impl LevelRoutes {
    /// Adds `msg`; returns whether the table changed.
    fn insert(&mut self, msg: (u32, u32, u32)) -> bool {
        if self.entries.contains(&msg) {
            return false;
        }
        if self.entries.len() < IOAPIC_ROUTES as usize {
            self.entries.push(msg);
        } else {
            // More distinct level-triggered messages than pins: forget the oldest. Its vector
            // keeps EOI exits while it is in service (KVM also checks pending EOIs).
            self.entries[self.next_victim] = msg;
            self.next_victim = (self.next_victim + 1) % self.entries.len();
        }
        true
    }

    fn apply(&self, vm: &VmFd) -> Result<(), VirtError> {
        let mut table = KvmIrqRouting::new(self.entries.len())
            .map_err(|_| VirtError::Unsupported("too many IRQ routes".into()))?;
        for (gsi, (e, &(address_lo, address_hi, data))) in table
            .as_mut_slice()
            .iter_mut()
            .zip(&self.entries)
            .enumerate()
        {
            *e = kvm_irq_routing_entry {
                gsi: gsi as u32,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi = kvm_irq_routing_msi {
                address_lo,
                address_hi,
                data,
                ..Default::default()
            };
        }
        vm.set_gsi_routing(&table)
            .map_err(|e| host_error("KVM_SET_GSI_ROUTING", e))
    }
}

impl Partition for KvmPartition {
    fn create_processor(
        &self,
        index: u32,
        cpuid: &CpuidTable,
    ) -> Result<Box<dyn Processor>, VirtError> {
        let inner = &self.inner;
        {
            let mut created = inner.created.lock();
            match created.get_mut(index as usize) {
                None => {
                    return Err(VirtError::Unsupported(format!(
                        "processor {index} of {}",
                        inner.processor_count
                    )));
                }
                Some(true) => {
                    return Err(VirtError::Unsupported(format!(
                        "processor {index} already exists"
                    )));
                }
                Some(c) => *c = true,
            }
        }
        let vcpu = inner
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|e| host_error("KVM_CREATE_VCPU", e))?;
        let table = convert::cpuid_to_kvm(cpuid, index)?;
        vcpu.set_cpuid2(&table)
            .map_err(|e| host_error("KVM_SET_CPUID2", e))?;
        if inner.tsc_khz.load(Ordering::Relaxed) == 0
            && let Ok(khz) = vcpu.get_tsc_khz()
        {
            inner.tsc_khz.store(khz, Ordering::Relaxed);
        }
        Ok(Box::new(KvmProcessor::new(vcpu, index, inner.clone())))
    }

    fn request_interrupt(&self, request: InterruptRequest) {
        let Some((address_lo, address_hi, data)) = msi_message(&request) else {
            tracing::debug!(?request, "ExtINT messages are delivered through set_extint");
            return;
        };
        if request.level_triggered {
            let mut routes = self.inner.routes.lock();
            if routes.insert((address_lo, address_hi, data))
                && let Err(e) = routes.apply(&self.inner.vm)
            {
                tracing::warn!(error = %e, "cannot update level-triggered routes; EOIs may be lost");
            }
        }
        let msi = kvm_msi {
            address_lo,
            address_hi,
            data,
            ..Default::default()
        };
        if let Err(e) = self.inner.vm.signal_msi(msi) {
            tracing::warn!(errno = e.errno(), ?request, "KVM_SIGNAL_MSI failed");
        }
    }

    fn set_extint(&self, asserted: bool) {
        self.inner.extint.store(asserted, Ordering::SeqCst);
        if asserted && let Some(vp0) = self.inner.vps.first() {
            vp0.kick();
        }
    }

    fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        for vp in &self.inner.vps {
            vp.kick();
        }
    }

    fn tsc_frequency(&self) -> u64 {
        u64::from(self.inner.tsc_khz.load(Ordering::Relaxed)) * 1000
    }

    fn apic_timer_frequency(&self) -> u64 {
        APIC_TIMER_HZ
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(mode: DeliveryMode, level: bool) -> InterruptRequest {
        InterruptRequest {
            destination: 3,
            logical_destination: false,
            delivery_mode: mode,
            vector: 0x31,
            level_triggered: level,
        }
    }

    #[test]
    fn msi_encoding() {
        assert_eq!(
            msi_message(&req(DeliveryMode::Fixed, true)),
            Some((0xfee0_3000, 0, 0xc031))
        );
        let mut r = req(DeliveryMode::Nmi, false);
        r.logical_destination = true;
        assert_eq!(msi_message(&r), Some((0xfee0_3004, 0, 0x4431)));
        assert_eq!(msi_message(&req(DeliveryMode::ExtInt, false)), None);
    }

    #[test]
    fn level_routes_are_bounded() {
        let mut r = LevelRoutes::default();
        assert!(r.insert((1, 0, 1)));
        assert!(!r.insert((1, 0, 1)));
        for i in 2..100 {
            r.insert((1, 0, i));
        }
        assert_eq!(r.entries.len(), IOAPIC_ROUTES as usize);
        assert!(r.entries.contains(&(1, 0, 99)));
    }
}
