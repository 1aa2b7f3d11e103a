//! Collective operations.
