//! flowey_core.
