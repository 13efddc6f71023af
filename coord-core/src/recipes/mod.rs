//! The coordination recipes, written once against [`crate::CoordinationBackend`].
