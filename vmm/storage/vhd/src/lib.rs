//! VHD (vhd1) fixed and dynamic images
