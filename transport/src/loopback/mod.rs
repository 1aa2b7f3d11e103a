//! Loopback backend: a single rank talking to itself.
//!
//! It implements the whole contract with plain in-process queues and copies,
//! which keeps the contract honest and serves a program started without a
//! launcher (a world of one).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use crate::{
    check_bounds, ActiveMessages, AmId, Caps, Error, Event, Iface, MemRegion, Progress, RemoteKey,
    Result, Rma,
};

/// Largest loopback message.
pub const MAX_AM: usize = 1 << 20;

/// The loopback endpoint: one peer, itself.
#[derive(Debug, Default)]
pub struct Loopback {
    queue: RefCell<VecDeque<(AmId, Vec<u8>)>>,
}

impl Loopback {
    /// A fresh endpoint with an empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Iface for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }
    fn caps(&self) -> Caps {
        Caps {
            am: true,
            max_am: MAX_AM,
            max_inline: MAX_AM,
            rma: true,
            put_zc: true,
            atomics: false,
            inter_node: false,
        }
    }
    fn index(&self) -> usize {
        0
    }
    fn npeers(&self) -> usize {
        1
    }
}

fn check_peer(peer: usize) -> Result<()> {
    if peer == 0 {
        Ok(())
    } else {
        Err(Error::NoSuchPeer { peer, npeers: 1 })
    }
}

impl ActiveMessages for Loopback {
    fn am_send(&self, peer: usize, id: AmId, hdr: &[u8], payload: &[u8]) -> Result<()> {
        check_peer(peer)?;
        let len = hdr.len() + payload.len();
        if len > MAX_AM {
            return Err(Error::TooLarge { len, max: MAX_AM });
        }
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(hdr);
        v.extend_from_slice(payload);
        self.queue.borrow_mut().push_back((id, v));
        Ok(())
    }
}

impl Progress for Loopback {
    fn progress<F: FnMut(Event<'_>)>(&self, mut f: F) -> usize {
        // Deliver only what was queued before this call, so a callback that
        // sends to itself cannot loop forever.
        let n = self.queue.borrow().len();
        for _ in 0..n {
            let Some((id, data)) = self.queue.borrow_mut().pop_front() else {
                return n;
            };
            f(Event::Am {
                src: 0,
                id,
                data: &data,
            });
        }
        n
    }

    fn wait(&self, timeout: Duration) -> Result<()> {
        if self.queue.borrow().is_empty() {
            // Nobody else can send to a loopback endpoint: sleeping is all there is.
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
        Ok(())
    }
}

const RKEY_LOOP_V1: u8 = 0x21;

fn unpack(rkey: &RemoteKey) -> Result<(usize, usize)> {
    let b = rkey.as_bytes();
    if b.len() != 17 || b[0] != RKEY_LOOP_V1 {
        return Err(Error::Malformed {
            what: "loopback remote key",
            reason: "wrong length or version",
        });
    }
    let addr = u64::from_le_bytes(b[1..9].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(b[9..17].try_into().expect("8 bytes"));
    Ok((addr as usize, len as usize))
}

impl Rma for Loopback {
    fn mem_register(&self, ptr: *const u8, len: usize) -> Result<MemRegion> {
        let mut b = [0u8; 17];
        b[0] = RKEY_LOOP_V1;
        b[1..9].copy_from_slice(&(ptr as u64).to_le_bytes());
        b[9..17].copy_from_slice(&(len as u64).to_le_bytes());
        Ok(MemRegion {
            addr: ptr as usize,
            len,
            rkey: RemoteKey::from_bytes(&b)?,
        })
    }

    unsafe fn get(
        &self,
        peer: usize,
        dst: *mut u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        check_peer(peer)?;
        let (addr, rlen) = unpack(rkey)?;
        check_bounds(offset, len, rlen)?;
        // SAFETY: the region was registered by this process and is kept valid by
        // its owner (see `mem_register`); `dst` is valid per the caller.
        unsafe { std::ptr::copy((addr + offset) as *const u8, dst, len) };
        Ok(())
    }

    unsafe fn put(
        &self,
        peer: usize,
        src: *const u8,
        len: usize,
        rkey: &RemoteKey,
        offset: usize,
    ) -> Result<()> {
        check_peer(peer)?;
        let (addr, rlen) = unpack(rkey)?;
        check_bounds(offset, len, rlen)?;
        // SAFETY: as in `get`.
        unsafe { std::ptr::copy(src, (addr + offset) as *mut u8, len) };
        Ok(())
    }
}
