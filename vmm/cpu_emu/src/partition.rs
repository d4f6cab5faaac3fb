//! The partition: state shared by all processors of a VM (interrupt fabric, stop flag,
//! clocks), and the `virt` trait implementations.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

use guest_mem::GuestMemory;
use parking_lot::Condvar;
use parking_lot::Mutex;
use virt::CpuidTable;
use virt::DeliveryMode;
use virt::InterruptRequest;
use virt::VirtError;
use virt::VmClock;

/// Per-processor state other threads may touch: the APIC's request register, INIT/SIPI/NMI
/// latches, what destination matching needs, and the halt wake-up.
pub(crate) struct VpShared {
    /// Interrupt request register, 256 bits.
    pub irr: [AtomicU32; 8],
    /// Trigger mode of each requested vector (1 = level), copied to TMR on acceptance.
    pub level: [AtomicU32; 8],
    pub nmi: AtomicBool,
    pub init: AtomicBool,
    /// Pending SIPI: 0x100 | vector.
    pub sipi: AtomicU32,
    /// An ExtINT was routed here through the IOAPIC.
    pub extint_msg: AtomicBool,
    /// Something happened: check events soon.
    pub attention: AtomicBool,
    pub apic_id: AtomicU32,
    pub ldr: AtomicU32,
    pub dfr: AtomicU32,
    /// APIC globally (APIC_BASE) and software (SVR) enabled.
    pub apic_enabled: AtomicBool,
    /// Current task priority (for lowest-priority arbitration).
    pub tpr: AtomicU32,
    /// Instructions retired (published at event checks).
    pub icount: std::sync::atomic::AtomicU64,
    /// Interrupts and exceptions delivered, by vector (published at event checks).
    pub delivered: [std::sync::atomic::AtomicU64; 256],
    wake_lock: Mutex<()>,
    wake: Condvar,
}

impl VpShared {
    fn new(index: u32) -> VpShared {
        VpShared {
            irr: Default::default(),
            level: Default::default(),
            nmi: AtomicBool::new(false),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            extint_msg: AtomicBool::new(false),
            attention: AtomicBool::new(false),
            apic_id: AtomicU32::new(index),
            ldr: AtomicU32::new(0),
            dfr: AtomicU32::new(0xffff_ffff),
            apic_enabled: AtomicBool::new(false),
            tpr: AtomicU32::new(0),
            icount: Default::default(),
            delivered: [const { std::sync::atomic::AtomicU64::new(0) }; 256],
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Flags attention and wakes the processor if it sleeps.
    pub(crate) fn kick(&self) {
        self.attention.store(true, Ordering::Release);
        let _g = self.wake_lock.lock();
        self.wake.notify_all();
    }

    /// Sleeps until kicked or until `timeout` passes (whichever first).
    pub(crate) fn sleep(&self, timeout: Option<std::time::Duration>) {
        let mut g = self.wake_lock.lock();
        if self.attention.load(Ordering::Acquire) {
            return;
        }
        match timeout {
            Some(t) => {
                self.wake.wait_for(&mut g, t);
            }
            None => self.wake.wait(&mut g),
        }
    }

    /// Requests `vector` (fixed delivery).
    pub(crate) fn set_irr(&self, vector: u8, level: bool) {
        let (i, bit) = ((vector >> 5) as usize, 1u32 << (vector & 31));
        if level {
            self.level[i].fetch_or(bit, Ordering::AcqRel);
        } else {
            self.level[i].fetch_and(!bit, Ordering::AcqRel);
        }
        self.irr[i].fetch_or(bit, Ordering::AcqRel);
        self.kick();
    }
}

/// State shared by all processors of a partition.
pub(crate) struct Shared {
    pub mem: GuestMemory,
    pub clock: VmClock,
    pub tsc_freq: u64,
    /// TSC ticks per ns as 32.32 fixed point.
    pub tsc_mult: u64,
    /// Highest TSC value any processor has read: RDTSC never returns less, so the TSC is
    /// monotonic across processors although each computes it from its own cached clock.
    pub tsc_high: std::sync::atomic::AtomicU64,
    pub apic_freq: u64,
    pub vps: Box<[VpShared]>,
    /// The PIC's INTR output (to VP 0's LINT0).
    pub extint: AtomicBool,
    pub stop: AtomicBool,
    pub user_msrs: Vec<std::ops::RangeInclusive<u32>>,
}

/// Crystal (and LAPIC timer) frequency advertised in CPUID leaf 0x15.
pub(crate) const CRYSTAL_HZ: u64 = 25_000_000;

impl Shared {
    pub(crate) fn new(mem: GuestMemory, n: u32, clock: VmClock, tsc_freq: u64) -> Arc<Shared> {
        Arc::new(Self::new_unshared(mem, n, clock, tsc_freq))
    }

    fn new_unshared(mem: GuestMemory, n: u32, clock: VmClock, tsc_freq: u64) -> Shared {
        Shared {
            mem,
            clock,
            tsc_freq,
            tsc_mult: ((u128::from(tsc_freq) << 32) / 1_000_000_000) as u64,
            tsc_high: std::sync::atomic::AtomicU64::new(0),
            apic_freq: CRYSTAL_HZ,
            vps: (0..n.max(1)).map(VpShared::new).collect(),
            extint: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            user_msrs: Vec::new(),
        }
    }

    /// Routes an interrupt message to the local APICs it addresses.
    pub(crate) fn deliver(&self, req: &InterruptRequest, from: Option<u32>) {
        let targets = self.destinations(req, from);
        match req.delivery_mode {
            DeliveryMode::LowestPriority => {
                // Lowest-priority arbitration: the enabled target with the lowest TPR.
                if let Some(vp) = targets
                    .iter()
                    .filter(|&&i| self.vps[i].apic_enabled.load(Ordering::Acquire))
                    .min_by_key(|&&i| self.vps[i].tpr.load(Ordering::Relaxed))
                {
                    self.vps[*vp].set_irr(req.vector, req.level_triggered);
                }
            }
            _ => {
                for i in targets {
                    self.deliver_one(i, req);
                }
            }
        }
    }

    pub(crate) fn deliver_one(&self, i: usize, req: &InterruptRequest) {
        let vp = &self.vps[i];
        match req.delivery_mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if vp.apic_enabled.load(Ordering::Acquire) && req.vector >= 16 {
                    vp.set_irr(req.vector, req.level_triggered);
                }
            }
            DeliveryMode::Nmi => {
                vp.nmi.store(true, Ordering::Release);
                vp.kick();
            }
            DeliveryMode::Init => {
                vp.init.store(true, Ordering::Release);
                vp.kick();
            }
            DeliveryMode::Startup => {
                vp.sipi
                    .store(0x100 | u32::from(req.vector), Ordering::Release);
                vp.kick();
            }
            DeliveryMode::ExtInt => {
                vp.extint_msg.store(true, Ordering::Release);
                vp.kick();
            }
            DeliveryMode::Smi => {
                tracing::debug!(vp = i, "SMI ignored: no SMM");
            }
        }
    }

    /// Indices of the processors an interrupt message addresses.
    pub(crate) fn destinations(&self, req: &InterruptRequest, from: Option<u32>) -> Vec<usize> {
        // Shorthands are encoded by the ICR path as destination values above 0xff_ffff.
        let _ = from;
        let mut out = Vec::new();
        for (i, vp) in self.vps.iter().enumerate() {
            let hit = if !req.logical_destination {
                req.destination == 0xff || req.destination == vp.apic_id.load(Ordering::Relaxed)
            } else {
                let ldr = vp.ldr.load(Ordering::Relaxed) >> 24;
                let dfr = vp.dfr.load(Ordering::Relaxed) >> 28;
                let d = req.destination & 0xff;
                if dfr == 0xf {
                    // Flat model.
                    d & ldr != 0
                } else {
                    // Cluster model.
                    (d >> 4) == (ldr >> 4) && (d & ldr & 0xf) != 0 || d == 0xff
                }
            };
            if hit {
                out.push(i);
            }
        }
        out
    }
}

/// The `emu` hypervisor: agar's own x86-64 CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmuHypervisor;

impl virt::Hypervisor for EmuHypervisor {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn check(&self) -> Result<(), VirtError> {
        Ok(())
    }

    fn supported_cpuid(&self) -> Result<CpuidTable, VirtError> {
        Ok(crate::cpuid::supported_cpuid(1))
    }

    fn new_partition(
        &self,
        config: virt::PartitionConfig,
    ) -> Result<Arc<dyn virt::Partition>, VirtError> {
        if config.processor_count == 0 || config.processor_count > 255 {
            return Err(VirtError::Unsupported(format!(
                "{} processors (emu supports 1..=255)",
                config.processor_count
            )));
        }
        let tsc = if config.tsc_frequency == 0 {
            2_000_000_000
        } else {
            config.tsc_frequency
        };
        let shared = Shared::new(config.memory, config.processor_count, config.clock, tsc);
        // The user MSR list is fixed at creation.
        let shared = match Arc::try_unwrap(shared) {
            Ok(mut s) => {
                s.user_msrs = config.user_msrs;
                Arc::new(s)
            }
            Err(s) => s,
        };
        Ok(Arc::new(EmuPartition {
            shared,
            created: Mutex::new(vec![false; config.processor_count as usize]),
        }))
    }
}

/// A partition of the `emu` backend.
pub struct EmuPartition {
    shared: Arc<Shared>,
    created: Mutex<Vec<bool>>,
}

impl EmuPartition {
    /// Creates a partition (what [`EmuHypervisor`]'s `new_partition` returns, with its
    /// concrete type for tools that want the counters below).
    pub fn new(config: virt::PartitionConfig) -> Result<Arc<EmuPartition>, VirtError> {
        if config.processor_count == 0 || config.processor_count > 255 {
            return Err(VirtError::Unsupported(format!(
                "{} processors (emu supports 1..=255)",
                config.processor_count
            )));
        }
        let tsc = if config.tsc_frequency == 0 {
            crate::cpuid::DEFAULT_TSC_HZ
        } else {
            config.tsc_frequency
        };
        let mut shared =
            Shared::new_unshared(config.memory, config.processor_count, config.clock, tsc);
        shared.user_msrs = config.user_msrs;
        Ok(Arc::new(EmuPartition {
            shared: Arc::new(shared),
            created: Mutex::new(vec![false; config.processor_count as usize]),
        }))
    }

    /// Guest instructions retired by all processors (updated every few microseconds).
    pub fn instructions(&self) -> u64 {
        self.shared
            .vps
            .iter()
            .map(|v| v.icount.load(Ordering::Relaxed))
            .sum()
    }

    /// Interrupts and exceptions delivered so far, as (vector, count) for nonzero counts.
    pub fn delivered(&self) -> Vec<(u8, u64)> {
        (0..=255u8)
            .filter_map(|v| {
                let n: u64 = self
                    .shared
                    .vps
                    .iter()
                    .map(|p| p.delivered[v as usize].load(Ordering::Relaxed))
                    .sum();
                (n > 0).then_some((v, n))
            })
            .collect()
    }
}

impl virt::Partition for EmuPartition {
    fn create_processor(
        &self,
        index: u32,
        cpuid: &CpuidTable,
    ) -> Result<Box<dyn virt::Processor>, VirtError> {
        let mut created = self.created.lock();
        let Some(slot) = created.get_mut(index as usize) else {
            return Err(VirtError::Unsupported(format!(
                "processor index {index} out of range"
            )));
        };
        if *slot {
            return Err(VirtError::Unsupported(format!(
                "processor {index} created twice"
            )));
        }
        *slot = true;
        let cpuid = crate::cpuid::per_vp(cpuid, index);
        Ok(Box::new(crate::vp::Vp::new(
            self.shared.clone(),
            index,
            cpuid,
        )))
    }

    fn request_interrupt(&self, request: InterruptRequest) {
        self.shared.deliver(&request, None);
    }

    fn set_extint(&self, asserted: bool) {
        self.shared.extint.store(asserted, Ordering::Release);
        if asserted {
            self.shared.vps[0].kick();
        }
    }

    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for vp in self.shared.vps.iter() {
            vp.kick();
        }
    }

    fn tsc_frequency(&self) -> u64 {
        self.shared.tsc_freq
    }

    fn apic_timer_frequency(&self) -> u64 {
        self.shared.apic_freq
    }
}
