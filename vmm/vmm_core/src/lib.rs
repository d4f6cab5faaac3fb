//! Machine assembly: memory layout, buses, interrupt routing, vCPU threads, halt reasons
