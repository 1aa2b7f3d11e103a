//! The table of active-message ids.
