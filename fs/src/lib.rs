//! dosfs
#![deny(missing_docs)]

pub mod error;
pub mod layout;

pub use error::{Error, Result};
