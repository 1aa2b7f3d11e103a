//! The bytes of the verbs backend that leave the process: the published
//! endpoint address, the packed remote key, and the immediate data that every
//! message carries.
//!
//! Everything is little-endian except the immediate data, which the verbs API
//! carries in network byte order (converted at the edge, in `iface`).
//!
//! # Address (published through the wire-up exchange)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `DOSV` |
//! | 4 | version ([`ADDR_VERSION`]) |
//! | 5 | link layer: 1 InfiniBand, 2 Ethernet (RoCE) |
//! | 6 | active MTU of the port (`ibv_mtu`: 1 = 256 B .. 5 = 4096 B) |
//! | 7 | RDMA reads this endpoint serves at once per connection (responder resources) |
//! | 8..10 | LID of the port (0 on Ethernet) |
//! | 10..12 | receive buffers posted per connection (the sender's initial credits) |
//! | 12..28 | GID of the port (the routing address on Ethernet) |
//! | 28..32 | largest active message (every endpoint of a job must agree) |
//! | 32..36 | index of the endpoint |
//! | 36..40 | number of endpoints `n` |
//! | 40.. | `n` times (QPN, PSN): the queue pair this endpoint uses for that peer, and the first packet sequence number it sends on it (both 24 bits; zero for itself) |
//!
//! # Remote key
//!
//! `'V'`, then the registered start address (u64), length (u64) and the
//! `rkey` of the memory region (u32): 21 bytes.
//!
//! # Immediate data
//!
//! Bits 0-7: active-message id; bits 8-23: receive buffers that the sender
//! reposted since it last said so (credits returned); bits 24-30: zero; bit
//! 31: a credit-only message without an active message (then the id is zero).

use crate::{Error, Result};

/// First bytes of an address.
pub const ADDR_MAGIC: [u8; 4] = *b"DOSV";
/// Version of the address layout (and of the message protocol it implies).
pub const ADDR_VERSION: u8 = 1;
/// Bytes of an address before its per-peer entries.
pub const ADDR_HDR: usize = 40;
/// Bytes of one per-peer entry (QPN, PSN).
pub const ADDR_ENTRY: usize = 8;
/// InfiniBand link layer (`IBV_LINK_LAYER_INFINIBAND`).
pub const LINK_IB: u8 = 1;
/// Ethernet link layer, RoCE (`IBV_LINK_LAYER_ETHERNET`).
pub const LINK_ETHERNET: u8 = 2;
/// Length of a packed remote key.
pub const KEY_LEN: usize = 21;
/// First byte of a packed remote key.
const KEY_TAG: u8 = b'V';
/// Largest queue pair number or packet sequence number (24 bits).
pub const MAX_24: u32 = 0xFF_FFFF;

const _: () = assert!(
    KEY_LEN <= crate::MAX_RKEY,
    "a verbs key must fit a RemoteKey"
);

#[cold]
fn bad(what: &'static str, reason: &'static str) -> Error {
    Error::Malformed { what, reason }
}

/// What an endpoint publishes so that its peers can connect their queue pairs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// [`LINK_IB`] or [`LINK_ETHERNET`].
    pub link_layer: u8,
    /// Active MTU of the port, as `ibv_mtu` (1..=5).
    pub mtu: u8,
    /// RDMA reads this endpoint serves at once per connection.
    pub rd_atomic: u8,
    /// LID of the port.
    pub lid: u16,
    /// Receive buffers posted per connection for active messages.
    pub recv_depth: u16,
    /// GID of the port.
    pub gid: [u8; 16],
    /// Largest active message in bytes.
    pub max_am: u32,
    /// Index of the endpoint.
    pub index: u32,
    /// Per peer: (QPN, PSN) of the queue pair used for it; `(0, 0)` for itself.
    pub qps: Vec<(u32, u32)>,
}

impl Address {
    /// The published bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ADDR_HDR + ADDR_ENTRY * self.qps.len());
        b.extend_from_slice(&ADDR_MAGIC);
        b.push(ADDR_VERSION);
        b.push(self.link_layer);
        b.push(self.mtu);
        b.push(self.rd_atomic);
        b.extend_from_slice(&self.lid.to_le_bytes());
        b.extend_from_slice(&self.recv_depth.to_le_bytes());
        b.extend_from_slice(&self.gid);
        b.extend_from_slice(&self.max_am.to_le_bytes());
        b.extend_from_slice(&self.index.to_le_bytes());
        b.extend_from_slice(&(self.qps.len() as u32).to_le_bytes());
        for &(qpn, psn) in &self.qps {
            b.extend_from_slice(&qpn.to_le_bytes());
            b.extend_from_slice(&psn.to_le_bytes());
        }
        b
    }

    /// Decodes and checks published bytes; never panics.
    pub fn decode(b: &[u8]) -> Result<Address> {
        const W: &str = "verbs address";
        if b.len() < ADDR_HDR {
            return Err(bad(W, "shorter than its header"));
        }
        if b[..4] != ADDR_MAGIC {
            return Err(bad(W, "bad magic"));
        }
        if b[4] != ADDR_VERSION {
            return Err(bad(W, "unsupported version"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (link_layer, mtu, rd_atomic) = (b[5], b[6], b[7]);
        if link_layer != LINK_IB && link_layer != LINK_ETHERNET {
            return Err(bad(W, "unknown link layer"));
        }
        if !(1..=5).contains(&mtu) {
            return Err(bad(W, "MTU out of range"));
        }
        let recv_depth = u16_at(10);
        if recv_depth == 0 {
            return Err(bad(W, "no receive buffers"));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[12..28]);
        let max_am = u32_at(28);
        if max_am < 1024 {
            return Err(bad(W, "largest active message below 1 KiB"));
        }
        let index = u32_at(32);
        let n = u32_at(36) as usize;
        if index as usize >= n {
            return Err(bad(W, "index outside the endpoint count"));
        }
        let want = n
            .checked_mul(ADDR_ENTRY)
            .and_then(|e| e.checked_add(ADDR_HDR));
        if want != Some(b.len()) {
            return Err(bad(W, "length does not match the endpoint count"));
        }
        let mut qps = Vec::with_capacity(n);
        for p in 0..n {
            let at = ADDR_HDR + p * ADDR_ENTRY;
            let (qpn, psn) = (u32_at(at), u32_at(at + 4));
            if qpn > MAX_24 || psn > MAX_24 {
                return Err(bad(W, "QPN or PSN above 24 bits"));
            }
            if p == index as usize && (qpn, psn) != (0, 0) {
                return Err(bad(W, "a queue pair to itself"));
            }
            qps.push((qpn, psn));
        }
        Ok(Address {
            link_layer,
            mtu,
            rd_atomic,
            lid: u16_at(8),
            recv_depth,
            gid,
            max_am,
            index,
            qps,
        })
    }
}

/// What a packed remote key names: a registered region of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbsKey {
    /// Registered start address (in the owner's address space).
    pub addr: u64,
    /// Registered length in bytes.
    pub len: u64,
    /// The memory region's remote key.
    pub rkey: u32,
}

impl VerbsKey {
    /// The packed bytes ([`KEY_LEN`] of them).
    pub fn pack(&self) -> [u8; KEY_LEN] {
        let mut b = [0u8; KEY_LEN];
        b[0] = KEY_TAG;
        b[1..9].copy_from_slice(&self.addr.to_le_bytes());
        b[9..17].copy_from_slice(&self.len.to_le_bytes());
        b[17..21].copy_from_slice(&self.rkey.to_le_bytes());
        b
    }

    /// Decodes packed bytes; never panics.
    pub fn unpack(b: &[u8]) -> Result<VerbsKey> {
        const W: &str = "verbs remote key";
        if b.len() != KEY_LEN {
            return Err(bad(W, "wrong length"));
        }
        if b[0] != KEY_TAG {
            return Err(bad(W, "not a verbs key"));
        }
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let k = VerbsKey {
            addr: u64_at(1),
            len: u64_at(9),
            rkey: u32::from_le_bytes([b[17], b[18], b[19], b[20]]),
        };
        if k.addr.checked_add(k.len).is_none() {
            return Err(bad(W, "region wraps around the address space"));
        }
        Ok(k)
    }
}

/// The immediate data of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imm {
    /// A credit-only message (no active message to deliver).
    pub credit_only: bool,
    /// Active-message id (zero for a credit-only message).
    pub id: u8,
    /// Receive buffers the sender reposted since it last said so.
    pub credits: u16,
}

const IMM_CREDIT_ONLY: u32 = 1 << 31;
const IMM_RESERVED: u32 = 0x7F00_0000;

impl Imm {
    /// The 32-bit value (host order).
    pub fn encode(&self) -> u32 {
        let flag = if self.credit_only { IMM_CREDIT_ONLY } else { 0 };
        flag | (self.credits as u32) << 8 | self.id as u32
    }

    /// Decodes a 32-bit value (host order); never panics.
    pub fn decode(v: u32) -> Result<Imm> {
        const W: &str = "verbs immediate data";
        if v & IMM_RESERVED != 0 {
            return Err(bad(W, "reserved bits set"));
        }
        let imm = Imm {
            credit_only: v & IMM_CREDIT_ONLY != 0,
            id: v as u8,
            credits: (v >> 8) as u16,
        };
        if imm.credit_only && imm.id != 0 {
            return Err(bad(W, "a credit-only message with an id"));
        }
        Ok(imm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize, index: usize) -> Address {
        Address {
            link_layer: LINK_ETHERNET,
            mtu: 3,
            rd_atomic: 16,
            lid: 0,
            recv_depth: 32,
            gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1],
            max_am: 65536,
            index: index as u32,
            qps: (0..n)
                .map(|p| {
                    if p == index {
                        (0, 0)
                    } else {
                        (0x100 + p as u32, (p as u32 * 7919) & MAX_24)
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn address_round_trip() {
        for (n, i) in [(1, 0), (2, 1), (5, 3), (64, 0)] {
            let a = sample(n, i);
            let b = a.encode();
            assert_eq!(b.len(), ADDR_HDR + ADDR_ENTRY * n);
            assert_eq!(Address::decode(&b).unwrap(), a);
        }
    }

    #[test]
    fn address_golden_header() {
        let b = sample(2, 1).encode();
        assert_eq!(&b[..8], b"DOSV\x01\x02\x03\x10");
        assert_eq!(&b[10..12], &32u16.to_le_bytes());
        assert_eq!(&b[28..40], &[0, 0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&b[40..48], &[0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn address_garbage_rejected() {
        let good = sample(3, 1).encode();
        let malformed = |b: &[u8]| matches!(Address::decode(b), Err(Error::Malformed { .. }));
        assert!(malformed(&[]));
        assert!(malformed(&good[..ADDR_HDR - 1]));
        assert!(malformed(&good[..good.len() - 1]));
        let mut longer = good.clone();
        longer.push(0);
        assert!(malformed(&longer));
        // One byte changed in each checked field.
        for (at, v) in [
            (0, b'X'),
            (4, 2),
            (5, 0),
            (5, 3),
            (6, 0),
            (6, 6),
            (36, 0),
            (32, 3),
            (43, 1),
        ] {
            let mut b = good.clone();
            b[at] = v;
            assert!(malformed(&b), "byte {at} = {v} accepted");
        }
        let mut b = good.clone();
        b[10..12].copy_from_slice(&0u16.to_le_bytes());
        assert!(malformed(&b), "zero receive depth accepted");
        let mut b = good.clone();
        b[28..32].copy_from_slice(&512u32.to_le_bytes());
        assert!(malformed(&b), "tiny max_am accepted");
        // A queue pair to itself.
        let mut b = good.clone();
        b[ADDR_HDR + ADDR_ENTRY] = 1;
        assert!(malformed(&b));
        // An endpoint count whose entries overflow the length computation.
        let mut b = good;
        b[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(malformed(&b));
    }

    #[test]
    fn key_round_trip_and_rejects() {
        let k = VerbsKey {
            addr: 0x7f00_1234_5678,
            len: 4096,
            rkey: 0xdead_beef,
        };
        let b = k.pack();
        assert_eq!(b.len(), KEY_LEN);
        assert_eq!(VerbsKey::unpack(&b).unwrap(), k);
        assert!(VerbsKey::unpack(&b[..20]).is_err());
        assert!(VerbsKey::unpack(&[9, 9, 9]).is_err());
        let mut t = b;
        t[0] = b'T';
        assert!(VerbsKey::unpack(&t).is_err());
        let wraps = VerbsKey {
            addr: u64::MAX - 10,
            len: 100,
            rkey: 1,
        };
        assert!(VerbsKey::unpack(&wraps.pack()).is_err());
    }

    #[test]
    fn imm_round_trip_and_rejects() {
        for imm in [
            Imm {
                credit_only: false,
                id: 0,
                credits: 0,
            },
            Imm {
                credit_only: false,
                id: 255,
                credits: u16::MAX,
            },
            Imm {
                credit_only: true,
                id: 0,
                credits: 17,
            },
        ] {
            assert_eq!(Imm::decode(imm.encode()).unwrap(), imm);
        }
        assert!(Imm::decode(1 << 24).is_err());
        assert!(Imm::decode(IMM_CREDIT_ONLY | 5).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), v in any::<u32>()) {
            let _ = Address::decode(&b);
            let _ = VerbsKey::unpack(&b);
            let _ = Imm::decode(v);
            // A valid header in front of random entries.
            let mut a = sample(2, 0).encode();
            a.truncate(ADDR_HDR);
            a.extend_from_slice(&b);
            let _ = Address::decode(&a);
        }

        #[test]
        fn addresses_round_trip(n in 1usize..40, seed in any::<u32>(), lid in any::<u16>(), gid in any::<[u8; 16]>()) {
            let index = seed as usize % n;
            let mut a = sample(n, index);
            a.lid = lid;
            a.gid = gid;
            a.link_layer = if seed & 1 == 0 { LINK_IB } else { LINK_ETHERNET };
            prop_assert_eq!(Address::decode(&a.encode()).unwrap(), a);
        }
    }
}
