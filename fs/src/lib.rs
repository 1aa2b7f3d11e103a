//! dosfs
#![deny(missing_docs)]

pub mod addrfile;
pub mod chunk;
pub mod client;
pub mod error;
pub mod journal;
pub mod layout;
pub mod meta;
pub mod server;
pub mod target;
pub mod wire;

pub use error::{Error, Result};
