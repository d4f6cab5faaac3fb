//! KVM backend of the processor abstraction
