//! The agar command: artifacts, disks, reports
