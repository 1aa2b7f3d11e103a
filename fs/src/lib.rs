//! dosfs
#![deny(missing_docs)]

pub mod chunk;
pub mod error;
pub mod journal;
pub mod layout;
pub mod meta;
pub mod target;
pub mod wire;

pub use error::{Error, Result};
