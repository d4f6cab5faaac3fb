//! Disk abstraction, file/mem/memdiff backends
