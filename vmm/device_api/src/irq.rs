//! Interrupt lines from devices to interrupt controllers.

use std::sync::Arc;

use parking_lot::Mutex;

/// Something that accepts line-level changes: the machine's interrupt router (PIC + IOAPIC), or
/// a [`TestIrqTarget`] in tests.
pub trait IrqTarget: Send + Sync {
    /// Sets the level of input `line` (a GSI for the router).
    fn set_irq(&self, line: u32, high: bool);
}

/// One interrupt line a device drives. Level-triggered semantics: the device sets the level it
/// wants; edge-triggered consumers (ISA IRQs on the PIC) see the rising edge.
#[derive(Clone)]
pub struct LineInterrupt {
    target: Option<Arc<dyn IrqTarget>>,
    line: u32,
}

impl std::fmt::Debug for LineInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineInterrupt")
            .field("line", &self.line)
            .field("connected", &self.target.is_some())
            .finish()
    }
}

impl LineInterrupt {
    /// A line wired to `target` input `line`.
    pub fn new(target: Arc<dyn IrqTarget>, line: u32) -> Self {
        Self {
            target: Some(target),
            line,
        }
    }

    /// A line connected to nothing.
    pub fn detached() -> Self {
        Self {
            target: None,
            line: 0,
        }
    }

    /// The input number on the target.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Sets the level.
    pub fn set_level(&self, high: bool) {
        if let Some(t) = &self.target {
            t.set_irq(self.line, high);
        }
    }

    /// Raises and lowers the line (an edge for edge-triggered inputs).
    pub fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// An [`IrqTarget`] that records levels, for unit tests.
#[derive(Default)]
pub struct TestIrqTarget {
    state: Mutex<TestIrqState>,
}

#[derive(Default)]
struct TestIrqState {
    levels: std::collections::BTreeMap<u32, bool>,
    rising_edges: std::collections::BTreeMap<u32, u32>,
}

impl TestIrqTarget {
    /// A new recorder behind an `Arc`, ready to hand out lines.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A line wired to input `line` of this recorder.
    pub fn line(self: &Arc<Self>, line: u32) -> LineInterrupt {
        LineInterrupt::new(self.clone(), line)
    }

    /// Current level of `line`.
    pub fn level(&self, line: u32) -> bool {
        self.state
            .lock()
            .levels
            .get(&line)
            .copied()
            .unwrap_or(false)
    }

    /// How many low-to-high transitions `line` has seen.
    pub fn rising_edges(&self, line: u32) -> u32 {
        self.state
            .lock()
            .rising_edges
            .get(&line)
            .copied()
            .unwrap_or(0)
    }
}

impl IrqTarget for TestIrqTarget {
    fn set_irq(&self, line: u32, high: bool) {
        let mut s = self.state.lock();
        let old = s.levels.insert(line, high).unwrap_or(false);
        if high && !old {
            *s.rising_edges.entry(line).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_levels_and_edges() {
        let t = TestIrqTarget::new();
        let l = t.line(4);
        l.set_level(true);
        l.set_level(true);
        assert!(t.level(4));
        l.set_level(false);
        l.pulse();
        assert_eq!(t.rising_edges(4), 2);
        assert!(!t.level(4));
        LineInterrupt::detached().pulse();
    }
}
