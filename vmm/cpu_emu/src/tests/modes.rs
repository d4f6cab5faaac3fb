//! Mode switches and events.
