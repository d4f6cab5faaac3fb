//! VHDX images
