//! coord-redis
