//! dosfs
#![deny(missing_docs)]

pub mod error;
pub mod layout;
pub mod target;

pub use error::{Error, Result};
