//! Framed, versioned host <-> guest agent protocol
