//! coord-testkit
