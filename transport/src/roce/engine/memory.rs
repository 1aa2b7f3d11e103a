//! Memory regions as the engine sees them: access rights, the [`Memory`] trait,
//! the bounds and rights check every access passes, and [`VecMemory`].

use std::fmt;
use std::ops::BitOr;

/// Access rights of a memory region (a set of flags, combined with `|`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// No right: enough to be the source of a local SEND or WRITE.
    pub const NONE: Access = Access(0);
    /// The engine may write into the region for this queue pair's own work requests
    /// (receive buffers, READ destinations).
    pub const LOCAL_WRITE: Access = Access(1);
    /// The peer may RDMA WRITE into the region.
    pub const REMOTE_WRITE: Access = Access(2);
    /// The peer may RDMA READ from the region.
    pub const REMOTE_READ: Access = Access(4);
    /// The peer may run atomics on the region.
    pub const REMOTE_ATOMIC: Access = Access(8);
    /// Every right.
    pub const ALL: Access = Access(15);

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights of both.
    pub const fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        self.union(rhs)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Access::LOCAL_WRITE, "LOCAL_WRITE"),
            (Access::REMOTE_WRITE, "REMOTE_WRITE"),
            (Access::REMOTE_READ, "REMOTE_READ"),
            (Access::REMOTE_ATOMIC, "REMOTE_ATOMIC"),
        ];
        let mut first = true;
        write!(f, "Access(")?;
        for (a, name) in names {
            if self.contains(a) {
                if !first {
                    write!(f, " | ")?;
                }
                write!(f, "{name}")?;
                first = false;
            }
        }
        if first {
            write!(f, "NONE")?;
        }
        write!(f, ")")
    }
}

/// What a memory region is: where it starts in the address space that RETHs and
/// scatter-gather elements use, how long it is, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Rights.
    pub access: Access,
}

/// A 64-bit atomic operation on a word of a memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    /// If the word equals `compare`, replace it with `swap`.
    CompareSwap {
        /// Value to compare with.
        compare: u64,
        /// Value to store on equality.
        swap: u64,
    },
    /// Add `add` to the word (wrapping).
    FetchAdd {
        /// Value to add.
        add: u64,
    },
}

impl AtomicOp {
    /// The word's new value, given its old one.
    pub const fn apply(self, old: u64) -> u64 {
        match self {
            AtomicOp::CompareSwap { compare, swap } => {
                if old == compare {
                    swap
                } else {
                    old
                }
            }
            AtomicOp::FetchAdd { add } => old.wrapping_add(add),
        }
    }
}

/// The memory a queue pair reads and writes: registered regions named by a 32-bit key.
///
/// The engine checks every access with [`check_access`] (which uses only
/// [`Memory::region`]) and calls `read`, `write` and `atomic` only for a range that
/// passed that check in the same call, with `offset` relative to the region's start.
/// Implementations therefore need no checks of their own (they may assert).
pub trait Memory {
    /// The region of `key`, if one is registered.
    fn region(&self, key: u32) -> Option<RegionInfo>;
    /// Copies `dst.len()` bytes at `offset` of region `key` into `dst`.
    fn read(&self, key: u32, offset: u64, dst: &mut [u8]);
    /// Copies `src` to `offset` of region `key`.
    fn write(&mut self, key: u32, offset: u64, src: &[u8]);
    /// Runs `op` on the 64-bit word at `offset` of region `key` (8-byte aligned as an
    /// address) atomically with respect to other atomics, and returns its old value.
    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64;
}

/// Why an access to memory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// No region has this key.
    #[error("no memory region has key {0:#x}")]
    NoSuchKey(u32),
    /// The range is not inside the region.
    #[error("access of {len} bytes at {addr:#x} is outside the memory region")]
    OutOfBounds {
        /// Start address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
    /// The region does not grant the right the access needs.
    #[error("the memory region does not grant {0:?}")]
    NotPermitted(Access),
}

/// Checks an access of `len` bytes at `addr` in the region `key` that needs `need`;
/// returns the offset of `addr` in the region.
pub fn check_access<M: Memory + ?Sized>(
    mem: &M,
    key: u32,
    addr: u64,
    len: u64,
    need: Access,
) -> Result<u64, AccessError> {
    let r = mem.region(key).ok_or(AccessError::NoSuchKey(key))?;
    if !r.access.contains(need) {
        return Err(AccessError::NotPermitted(need));
    }
    let oob = AccessError::OutOfBounds { addr, len };
    let offset = addr.checked_sub(r.addr).ok_or(oob)?;
    let end = offset.checked_add(len).ok_or(oob)?;
    if end > r.len {
        return Err(oob);
    }
    Ok(offset)
}

/// [`Memory`] backed by vectors: for tests, simulation and examples.
#[derive(Debug, Default, Clone)]
pub struct VecMemory {
    regions: Vec<(u32, RegionInfo, Vec<u8>)>,
    next_key: u32,
}

impl VecMemory {
    /// No regions.
    pub fn new() -> VecMemory {
        VecMemory::default()
    }

    /// Registers `data` as a region starting at address `addr` with rights `access`;
    /// returns its key (never 0).
    pub fn register(&mut self, addr: u64, data: Vec<u8>, access: Access) -> u32 {
        // Keys that are not small consecutive integers, so that a test's made-up key
        // is unlikely to name a region.
        let key = loop {
            self.next_key = self.next_key.wrapping_add(1);
            let key = self.next_key.wrapping_mul(0x9E37_79B1) | 1;
            if self.region(key).is_none() {
                break key;
            }
        };
        let info = RegionInfo {
            addr,
            len: data.len() as u64,
            access,
        };
        self.regions.push((key, info, data));
        key
    }

    /// Removes the region `key`; returns its bytes.
    pub fn deregister(&mut self, key: u32) -> Option<Vec<u8>> {
        let i = self.regions.iter().position(|r| r.0 == key)?;
        Some(self.regions.remove(i).2)
    }

    /// The bytes of region `key`.
    pub fn bytes(&self, key: u32) -> Option<&[u8]> {
        self.regions
            .iter()
            .find(|r| r.0 == key)
            .map(|r| r.2.as_slice())
    }

    /// The bytes of region `key`, writable.
    pub fn bytes_mut(&mut self, key: u32) -> Option<&mut [u8]> {
        self.regions
            .iter_mut()
            .find(|r| r.0 == key)
            .map(|r| r.2.as_mut_slice())
    }

    fn data(&self, key: u32) -> &[u8] {
        self.bytes(key).expect("access to a checked region")
    }

    fn data_mut(&mut self, key: u32) -> &mut [u8] {
        self.bytes_mut(key).expect("access to a checked region")
    }
}

impl Memory for VecMemory {
    fn region(&self, key: u32) -> Option<RegionInfo> {
        self.regions.iter().find(|r| r.0 == key).map(|r| r.1)
    }

    fn read(&self, key: u32, offset: u64, dst: &mut [u8]) {
        let at = offset as usize;
        dst.copy_from_slice(&self.data(key)[at..at + dst.len()]);
    }

    fn write(&mut self, key: u32, offset: u64, src: &[u8]) {
        let at = offset as usize;
        self.data_mut(key)[at..at + src.len()].copy_from_slice(src);
    }

    fn atomic(&mut self, key: u32, offset: u64, op: AtomicOp) -> u64 {
        let at = offset as usize;
        let word: &mut [u8; 8] = (&mut self.data_mut(key)[at..at + 8])
            .try_into()
            .expect("8 bytes");
        let old = u64::from_ne_bytes(*word);
        *word = op.apply(old).to_ne_bytes();
        old
    }
}
