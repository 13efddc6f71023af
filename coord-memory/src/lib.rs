//! coord-memory
