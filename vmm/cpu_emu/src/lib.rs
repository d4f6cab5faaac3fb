//! agar's own x86-64 CPU: the emu backend
