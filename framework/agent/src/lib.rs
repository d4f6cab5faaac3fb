//! Guest agent (static binary) serving the host over a serial port
