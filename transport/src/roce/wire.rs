//! RoCEv2 packets of the Reliable Connection transport: the Base Transport Header,
//! the extension headers, and whole packets with their ICRC.
//!
//! Field layouts (InfiniBand Architecture Specification Vol. 1, chapter 9; all fields
//! big-endian, bit 7 is the most significant bit of a byte):
//!
//! ```text
//! BTH (12):          0 OpCode | 1 SE(7) M(6) PadCnt(5..4) TVer(3..0) | 2..4 P_Key
//!                    | 4 FECN(7) BECN(6) resv6(5..0) | 5..8 DestQP (24 bits)
//!                    | 8 AckReq(7) resv7(6..0) | 9..12 PSN (24 bits)
//! RETH (16):         0..8 virtual address | 8..12 R_Key | 12..16 DMA length
//! AETH (4):          0 syndrome | 1..4 MSN (24 bits)
//! AtomicETH (28):    0..8 virtual address | 8..12 R_Key | 12..20 swap (or add) data
//!                    | 20..28 compare data
//! AtomicAckETH (8):  0..8 original remote data
//! ImmDt (4):         0..4 immediate data
//! ```
//!
//! Extension headers follow the BTH in the order RETH, AtomicETH, AETH, AtomicAckETH,
//! ImmDt; which of them are present is fixed by the opcode ([`Opcode::layout`]). Then
//! come the payload, `PadCnt` zero bytes that make the payload a multiple of four
//! bytes, and the ICRC ([`super::icrc`]).
//!
//! Reserved bits are written as zero and ignored when read (`resv6`, `resv7`); a
//! reserved syndrome or NAK code, a transport version other than 0 and an opcode of
//! another transport than RC are errors. Decoding never panics and never allocates.
//!
//! # Authenticated packets (a dos extension, wire format 2)
//!
//! The ICRC detects corruption, not forgery: anyone who sees one packet can make
//! the next (the CRC has no key). On a connection that negotiated it (both ends
//! said so in their connection address, see `super::iface`), every packet carries
//! an authentication tag of [`AUTH_TAG_LEN`] bytes as the last bytes of its
//! payload, after the payload proper and before the pad:
//!
//! ```text
//! BTH | extension headers | payload | tag (16) | pad (0 to 3) | ICRC (4)
//! tag = first 16 bytes of BLAKE3-keyed(key, BTH | extension headers | payload)
//! ```
//!
//! * Every opcode carries it, also those without a payload (ACKs, READ requests,
//!   atomics): there it is all that follows the headers. The pad count is that of
//!   the payload (the tag's length is a multiple of four), and the ICRC covers the
//!   tag like any payload byte, so capture tools still decode the packets as RoCEv2
//!   (tshark shows the tag as payload data, or ignores it after an ACK's AETH) and
//!   the ICRC check of a capture still passes.
//! * The tag covers the whole BTH, its QPN and PSN included (byte 4 too, which the
//!   ICRC leaves out: on a UDP path nothing rewrites it, RoCEv2 marks congestion in
//!   the IP header), the extension headers and the payload; not the IP and UDP
//!   headers, whose IPv4 identification differs between the packets of a GSO train.
//!   A packet renumbered to another PSN or queue pair fails; an exact copy is a
//!   duplicate for the PSN window. (A copy kept for 2^24 packets of the same PSN
//!   space, until its PSN comes around again, would pass: a connection carrying that
//!   much is as exposed as IPsec without extended sequence numbers.)
//! * The key ([`PacketKey`]) is one direction's of one connection: made from the
//!   job's secret and both ends' fresh nonces of the connection exchange
//!   (`super::iface`), so that keys differ per queue pair, per direction and per
//!   job and no tag is valid anywhere else.
//! * [`Packet::decode_framed`] checks the structure and the tag (in constant
//!   time), and a packet that passes needs no ICRC check (the tag is the stronger
//!   check: one pass less over each packet); one that fails is checked against its
//!   ICRC first, so that corruption is told from forgery. [`WireError::Auth`] is a
//!   forgery or a packet of another connection, to count and drop.
//!
//! Without a key ([`Framing::key`] `None`, `DOS_ROCE_AUTH=0`) packets are plain
//! RoCEv2 as above (wire format 1), for peers that are real RoCE devices. The
//! packets themselves do not say which format they are in (the BTH's TVer must
//! stay 0 for RoCEv2 decoders): the connection exchange does, each end's address
//! carrying whether it authenticates, and ends that disagree do not connect.

use super::icrc::{self, IpUdp, ICRC_LEN};

/// Size of the Base Transport Header.
pub const BTH_LEN: usize = 12;
/// Size of the RDMA Extended Transport Header.
pub const RETH_LEN: usize = 16;
/// Size of the ACK Extended Transport Header.
pub const AETH_LEN: usize = 4;
/// Size of the Atomic Extended Transport Header.
pub const ATOMIC_ETH_LEN: usize = 28;
/// Size of the Atomic ACK Extended Transport Header.
pub const ATOMIC_ACK_ETH_LEN: usize = 8;
/// Size of the Immediate Data header.
pub const IMMDT_LEN: usize = 4;
/// Largest BTH plus extension headers of a supported opcode (BTH and AtomicETH).
pub const MAX_HEADERS_LEN: usize = BTH_LEN + ATOMIC_ETH_LEN;
/// The only transport header version (BTH `TVer`) defined.
pub const TRANSPORT_VERSION: u8 = 0;
/// The default partition key (full member of the default partition).
pub const DEFAULT_PKEY: u16 = 0xFFFF;
/// Bytes of the authentication tag at the end of the payload of an authenticated
/// packet (see the [module docs](self)); a multiple of four.
pub const AUTH_TAG_LEN: usize = 16;

/// The key that authenticates the packets of one direction of one connection:
/// keyed BLAKE3, truncated to [`AUTH_TAG_LEN`] bytes (see the [module docs](self)).
///
/// Its `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PacketKey([u8; 32]);

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

impl PacketKey {
    /// The key of 32 bytes `k` (uniformly random, or derived by a KDF).
    pub const fn from_bytes(k: [u8; 32]) -> PacketKey {
        PacketKey(k)
    }

    /// The tag of `covered`: a packet from its BTH to the end of its payload.
    pub fn tag(&self, covered: &[u8]) -> [u8; AUTH_TAG_LEN] {
        let h = blake3::keyed_hash(&self.0, covered);
        let mut t = [0u8; AUTH_TAG_LEN];
        t.copy_from_slice(&h.as_bytes()[..AUTH_TAG_LEN]);
        t
    }

    /// Whether `tag` is the tag of `covered`, compared in constant time.
    pub fn verify(&self, covered: &[u8], tag: &[u8]) -> bool {
        let want = self.tag(covered);
        if tag.len() != AUTH_TAG_LEN {
            return false;
        }
        let diff = want.iter().zip(tag).fold(0u8, |d, (a, b)| d | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// How the packets of one direction of a connection are framed: the IP and UDP
/// headers their ICRC covers, and the key of their tags on an authenticated
/// connection ([`Packet::encode_framed`], [`Packet::decode_framed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// The datagrams' IP and UDP headers as the ICRC sees them.
    pub hdrs: IpUdp,
    /// The key of the authentication tags; `None`: packets carry no tag.
    pub key: Option<PacketKey>,
}

impl Framing {
    /// Plain RoCEv2 packets in datagrams with `hdrs`.
    pub const fn plain(hdrs: IpUdp) -> Framing {
        Framing { hdrs, key: None }
    }

    /// Bytes a tag adds to each packet: [`AUTH_TAG_LEN`] with a key, 0 without.
    pub const fn tag_len(&self) -> usize {
        if self.key.is_some() {
            AUTH_TAG_LEN
        } else {
            0
        }
    }
}

const MASK24: u32 = 0x00FF_FFFF;

/// Why a packet did not decode or encode.
///
/// Convert it into the crate's [`crate::Error`] (a `Malformed` or `TooLarge`) where
/// the distinction does not matter; keep it where it does (an ICRC failure is a
/// corrupted packet to count and drop, the rest are protocol errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The packet ends before a header it must have.
    #[error("roce packet truncated: {what} needs {need} bytes, {have} left")]
    Truncated {
        /// The part that did not fit.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// An opcode this implementation does not speak (another transport than RC,
    /// or one of the RC opcodes it does not support).
    #[error("roce packet with unsupported opcode {0:#04x}")]
    UnsupportedOpcode(u8),
    /// A BTH transport header version other than [`TRANSPORT_VERSION`].
    #[error("roce packet with transport header version {0}")]
    UnsupportedVersion(u8),
    /// A field or length that the specification does not allow.
    #[error("malformed roce packet: {0}")]
    Malformed(&'static str),
    /// The ICRC the packet carries is not the one of its contents: it was
    /// corrupted (or its IP and UDP headers are not the ones assumed).
    #[error("roce packet failed its ICRC: carried {carried:#010x}, computed {computed:#010x}")]
    Icrc {
        /// The ICRC at the end of the packet.
        carried: u32,
        /// The ICRC of its contents.
        computed: u32,
    },
    /// The packet's authentication tag is not the one of its contents under the
    /// connection's key: forged, replayed with another PSN, or of another connection.
    #[error("roce packet failed its authentication tag")]
    Auth,
    /// The caller's buffer cannot hold the encoded packet.
    #[error("buffer of {have} bytes is too small for a roce packet of {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

impl From<WireError> for crate::Error {
    fn from(e: WireError) -> crate::Error {
        let reason = match e {
            WireError::Truncated { .. } => "truncated",
            WireError::UnsupportedOpcode(_) => "unsupported opcode",
            WireError::UnsupportedVersion(_) => "unsupported transport header version",
            WireError::Malformed(reason) => reason,
            WireError::Icrc { .. } => "ICRC mismatch",
            WireError::Auth => "authentication tag mismatch",
            WireError::BufferTooSmall { need, have } => {
                return crate::Error::TooLarge {
                    len: need,
                    max: have,
                }
            }
        };
        crate::Error::Malformed {
            what: "roce packet",
            reason,
        }
    }
}

macro_rules! seq24 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            /// Largest value (2^24 - 1).
            pub const MAX: u32 = MASK24;

            /// The value `v` modulo 2^24.
            #[inline]
            pub const fn new(v: u32) -> Self {
                Self(v & MASK24)
            }

            /// The value, below 2^24.
            #[inline]
            pub const fn get(self) -> u32 {
                self.0
            }

            /// `self + n` modulo 2^24.
            #[inline]
            pub const fn wrapping_add(self, n: u32) -> Self {
                Self::new(self.0.wrapping_add(n))
            }

            /// How far `self` is after `earlier` in 24-bit serial-number arithmetic:
            /// in `-2^23..2^23`, negative when `self` comes before `earlier`.
            #[inline]
            pub const fn distance_from(self, earlier: Self) -> i32 {
                // Sign-extend the 24-bit difference.
                ((self.0.wrapping_sub(earlier.0) << 8) as i32) >> 8
            }
        }
    };
}

seq24!(
    /// A packet sequence number: 24 bits, counting modulo 2^24.
    ///
    /// The derived ordering is that of the raw values; use
    /// [`Psn::distance_from`] to compare positions in a window that may wrap.
    Psn
);

seq24!(
    /// A message sequence number (AETH): 24 bits, counting modulo 2^24.
    Msn
);

/// A queue pair number: 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Qpn(u32);

impl Qpn {
    /// Largest queue pair number (2^24 - 1).
    pub const MAX: u32 = MASK24;

    /// `v` as a queue pair number, or `None` if it does not fit 24 bits.
    #[inline]
    pub const fn new(v: u32) -> Option<Qpn> {
        if v <= MASK24 {
            Some(Qpn(v))
        } else {
            None
        }
    }

    /// The number.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $spec:literal,
       [$($hdr:ident),*], payload: $payload:literal;)*) => {
        /// The opcodes of the Reliable Connection transport (the BTH's first byte;
        /// its top three bits, 000, name the transport).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Opcode {
            $($(#[$doc])* $name = $code,)*
        }

        impl Opcode {
            /// Every supported opcode, in code order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];

            /// The opcode of code `c`, if it is one we support.
            #[inline]
            pub const fn from_code(c: u8) -> Option<Opcode> {
                match c {
                    $($code => Some(Opcode::$name),)*
                    _ => None,
                }
            }

            /// The specification's name (`"SEND_FIRST"`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Opcode::$name => $spec,)*
                }
            }

            /// Which extension headers follow the BTH, and whether a payload follows them.
            #[inline]
            pub const fn layout(self) -> Layout {
                match self {
                    $(Opcode::$name => {
                        let mut l = Layout::NONE;
                        $(l.$hdr = true;)*
                        l.payload = $payload;
                        l
                    })*
                }
            }
        }
    };
}

opcodes! {
    /// First packet of a multi-packet send.
    SendFirst = 0x00, "SEND_FIRST", [], payload: true;
    /// Middle packet of a send.
    SendMiddle = 0x01, "SEND_MIDDLE", [], payload: true;
    /// Last packet of a send.
    SendLast = 0x02, "SEND_LAST", [], payload: true;
    /// Last packet of a send with immediate data.
    SendLastWithImmediate = 0x03, "SEND_LAST_WITH_IMMEDIATE", [immdt], payload: true;
    /// A send in one packet.
    SendOnly = 0x04, "SEND_ONLY", [], payload: true;
    /// A send with immediate data in one packet.
    SendOnlyWithImmediate = 0x05, "SEND_ONLY_WITH_IMMEDIATE", [immdt], payload: true;
    /// First packet of an RDMA write (carries the target in its RETH).
    RdmaWriteFirst = 0x06, "RDMA_WRITE_FIRST", [reth], payload: true;
    /// Middle packet of an RDMA write.
    RdmaWriteMiddle = 0x07, "RDMA_WRITE_MIDDLE", [], payload: true;
    /// Last packet of an RDMA write.
    RdmaWriteLast = 0x08, "RDMA_WRITE_LAST", [], payload: true;
    /// Last packet of an RDMA write with immediate data.
    RdmaWriteLastWithImmediate = 0x09, "RDMA_WRITE_LAST_WITH_IMMEDIATE", [immdt], payload: true;
    /// An RDMA write in one packet.
    RdmaWriteOnly = 0x0A, "RDMA_WRITE_ONLY", [reth], payload: true;
    /// An RDMA write with immediate data in one packet.
    RdmaWriteOnlyWithImmediate = 0x0B, "RDMA_WRITE_ONLY_WITH_IMMEDIATE", [reth, immdt], payload: true;
    /// An RDMA read request (the RETH names what to read).
    RdmaReadRequest = 0x0C, "RDMA_READ_REQUEST", [reth], payload: false;
    /// First packet of a multi-packet read response.
    RdmaReadResponseFirst = 0x0D, "RDMA_READ_RESPONSE_FIRST", [aeth], payload: true;
    /// Middle packet of a read response.
    RdmaReadResponseMiddle = 0x0E, "RDMA_READ_RESPONSE_MIDDLE", [], payload: true;
    /// Last packet of a read response.
    RdmaReadResponseLast = 0x0F, "RDMA_READ_RESPONSE_LAST", [aeth], payload: true;
    /// A read response in one packet.
    RdmaReadResponseOnly = 0x10, "RDMA_READ_RESPONSE_ONLY", [aeth], payload: true;
    /// An acknowledgement (ACK, NAK or RNR NAK, by its AETH's syndrome).
    Acknowledge = 0x11, "ACKNOWLEDGE", [aeth], payload: false;
    /// The response to an atomic operation, with the original remote value.
    AtomicAcknowledge = 0x12, "ATOMIC_ACKNOWLEDGE", [aeth, atomic_ack_eth], payload: false;
    /// Atomic compare and swap of a remote 64-bit word.
    CompareSwap = 0x13, "COMPARE_SWAP", [atomic_eth], payload: false;
    /// Atomic fetch and add on a remote 64-bit word.
    FetchAdd = 0x14, "FETCH_ADD", [atomic_eth], payload: false;
}

impl Opcode {
    /// The opcode's code (the BTH's first byte).
    #[inline]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Size of the BTH and the extension headers of this opcode.
    #[inline]
    pub const fn headers_len(self) -> usize {
        self.layout().headers_len()
    }

    /// Whether a responder sends it (read responses and acknowledgements), as
    /// opposed to a requester.
    #[inline]
    pub const fn is_response(self) -> bool {
        matches!(
            self,
            Opcode::RdmaReadResponseFirst
                | Opcode::RdmaReadResponseMiddle
                | Opcode::RdmaReadResponseLast
                | Opcode::RdmaReadResponseOnly
                | Opcode::Acknowledge
                | Opcode::AtomicAcknowledge
        )
    }
}

/// Which extension headers follow the BTH of an opcode, and whether a payload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// RDMA Extended Transport Header ([`Reth`]).
    pub reth: bool,
    /// Atomic Extended Transport Header ([`AtomicEth`]).
    pub atomic_eth: bool,
    /// ACK Extended Transport Header ([`Aeth`]).
    pub aeth: bool,
    /// Atomic ACK Extended Transport Header ([`AtomicAckEth`]).
    pub atomic_ack_eth: bool,
    /// Immediate data ([`ImmDt`]).
    pub immdt: bool,
    /// A payload (possibly empty) follows the headers; without one, nothing but
    /// the ICRC does.
    pub payload: bool,
}

impl Layout {
    const NONE: Layout = Layout {
        reth: false,
        atomic_eth: false,
        aeth: false,
        atomic_ack_eth: false,
        immdt: false,
        payload: false,
    };

    /// Size of the BTH and the extension headers.
    pub const fn headers_len(&self) -> usize {
        BTH_LEN
            + if self.reth { RETH_LEN } else { 0 }
            + if self.atomic_eth { ATOMIC_ETH_LEN } else { 0 }
            + if self.aeth { AETH_LEN } else { 0 }
            + if self.atomic_ack_eth {
                ATOMIC_ACK_ETH_LEN
            } else {
                0
            }
            + if self.immdt { IMMDT_LEN } else { 0 }
    }
}

#[inline]
fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

#[inline]
fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// The first `N` bytes of `b`, or a [`WireError::Truncated`] naming `what`.
#[inline]
fn head<'a, const N: usize>(b: &'a [u8], what: &'static str) -> Result<&'a [u8; N], WireError> {
    b.first_chunk::<N>().ok_or(WireError::Truncated {
        what,
        need: N,
        have: b.len(),
    })
}

/// The Base Transport Header, at the start of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bth {
    /// What the packet is.
    pub opcode: Opcode,
    /// SE: the responder should raise a completion event for this message.
    pub solicited: bool,
    /// M: migration request (automatic path migration; we keep it 0).
    pub mig_req: bool,
    /// PadCnt: bytes of pad after the payload, 0 to 3. [`Packet::encode`] sets it
    /// from the payload length; [`Bth::encode`] writes its two low bits.
    pub pad_count: u8,
    /// P_Key: the partition key ([`DEFAULT_PKEY`]).
    pub pkey: u16,
    /// FECN: a switch saw congestion on the way (RoCEv2 marks ECN in the IP header
    /// instead; kept for completeness). Not covered by the ICRC.
    pub fecn: bool,
    /// BECN: the sender saw congestion on the reverse path. Not covered by the ICRC.
    pub becn: bool,
    /// The destination queue pair.
    pub dest_qp: Qpn,
    /// AckReq: the requester asks for an acknowledgement of this packet.
    pub ack_req: bool,
    /// The packet sequence number.
    pub psn: Psn,
}

impl Bth {
    /// A BTH for `opcode` to `dest_qp` with `psn`: default P_Key, no flags.
    pub const fn new(opcode: Opcode, dest_qp: Qpn, psn: Psn) -> Bth {
        Bth {
            opcode,
            solicited: false,
            mig_req: false,
            pad_count: 0,
            pkey: DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp,
            ack_req: false,
            psn,
        }
    }

    /// Encodes the header (transport version 0, reserved bits zero).
    pub fn encode(&self) -> [u8; BTH_LEN] {
        let mut b = [0u8; BTH_LEN];
        b[0] = self.opcode.code();
        b[1] = (u8::from(self.solicited) << 7)
            | (u8::from(self.mig_req) << 6)
            | ((self.pad_count & 3) << 4)
            | TRANSPORT_VERSION;
        b[2..4].copy_from_slice(&self.pkey.to_be_bytes());
        b[4..8].copy_from_slice(&self.dest_qp.get().to_be_bytes());
        b[4] = (u8::from(self.fecn) << 7) | (u8::from(self.becn) << 6);
        b[8..12].copy_from_slice(&self.psn.get().to_be_bytes());
        b[8] = u8::from(self.ack_req) << 7;
        b
    }

    /// Decodes the header at the start of `b`.
    ///
    /// Fails on short input, an unsupported opcode or a transport version other than 0;
    /// ignores the reserved bits.
    pub fn decode(b: &[u8]) -> Result<Bth, WireError> {
        let b = head::<BTH_LEN>(b, "BTH")?;
        let opcode = Opcode::from_code(b[0]).ok_or(WireError::UnsupportedOpcode(b[0]))?;
        let tver = b[1] & 0x0F;
        if tver != TRANSPORT_VERSION {
            return Err(WireError::UnsupportedVersion(tver));
        }
        Ok(Bth {
            opcode,
            solicited: b[1] & 0x80 != 0,
            mig_req: b[1] & 0x40 != 0,
            pad_count: (b[1] >> 4) & 3,
            pkey: u16::from_be_bytes([b[2], b[3]]),
            fecn: b[4] & 0x80 != 0,
            becn: b[4] & 0x40 != 0,
            dest_qp: Qpn(be_u32(b, 4) & MASK24),
            ack_req: b[8] & 0x80 != 0,
            psn: Psn::new(be_u32(b, 8)),
        })
    }
}

/// RDMA Extended Transport Header: where an RDMA write or read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reth {
    /// Virtual address of the first byte at the responder.
    pub va: u64,
    /// Remote key of the responder's memory region.
    pub rkey: u32,
    /// Length of the whole operation in bytes.
    pub dma_len: u32,
}

impl Reth {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; RETH_LEN] {
        let mut b = [0u8; RETH_LEN];
        b[0..8].copy_from_slice(&self.va.to_be_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        b[12..16].copy_from_slice(&self.dma_len.to_be_bytes());
        b
    }

    /// Decodes the header at the start of `b` (any 16 bytes are one).
    pub fn decode(b: &[u8]) -> Result<Reth, WireError> {
        let b = head::<RETH_LEN>(b, "RETH")?;
        Ok(Reth {
            va: be_u64(b, 0),
            rkey: be_u32(b, 8),
            dma_len: be_u32(b, 12),
        })
    }
}

/// The NAK codes of an AETH syndrome (its low five bits when the type is NAK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NakCode {
    /// The responder expected another PSN: resend from the AETH's PSN.
    PsnSequenceError = 0,
    /// The request is not valid (unsupported opcode, bad length, ...).
    InvalidRequest = 1,
    /// The R_Key or the range of an RDMA or atomic request was rejected.
    RemoteAccessError = 2,
    /// The responder could not complete the request.
    RemoteOperationalError = 3,
    /// An RD request that the responder cannot accept (reliable datagram only).
    InvalidRdRequest = 4,
}

impl NakCode {
    /// The code of value `v`, if it is one the specification defines.
    pub const fn from_code(v: u8) -> Option<NakCode> {
        Some(match v {
            0 => NakCode::PsnSequenceError,
            1 => NakCode::InvalidRequest,
            2 => NakCode::RemoteAccessError,
            3 => NakCode::RemoteOperationalError,
            4 => NakCode::InvalidRdRequest,
            _ => return None,
        })
    }
}

/// The syndrome of an AETH: what an acknowledgement says.
///
/// On the wire: bit 7 reserved (0), bits 6..5 the type (00 ACK, 01 RNR NAK, 11 NAK;
/// 10 is reserved), bits 4..0 the credit count, the RNR timer or the NAK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syndrome {
    /// Positive acknowledgement. `credits` (five bits) is the encoded count of
    /// receive buffers the responder has; `0b11111` means it has no count to give.
    Ack {
        /// Encoded credit count, 0 to 31.
        credits: u8,
    },
    /// Receiver not ready: retry after the time that `timer` (five bits, the
    /// specification's encoded RNR timer) stands for.
    RnrNak {
        /// Encoded RNR timer, 0 to 31.
        timer: u8,
    },
    /// Negative acknowledgement.
    Nak(NakCode),
}

impl Syndrome {
    /// The credit count that says "no end-to-end credits".
    pub const NO_CREDITS: u8 = 0x1F;

    /// Encodes the syndrome byte (five-bit values are masked).
    pub const fn to_byte(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => credits & 0x1F,
            Syndrome::RnrNak { timer } => 0x20 | (timer & 0x1F),
            Syndrome::Nak(code) => 0x60 | code as u8,
        }
    }

    /// Decodes a syndrome byte; fails on a reserved type, bit or NAK code.
    pub const fn from_byte(v: u8) -> Result<Syndrome, WireError> {
        if v & 0x80 != 0 {
            return Err(WireError::Malformed(
                "AETH syndrome with its reserved bit set",
            ));
        }
        let low = v & 0x1F;
        match v >> 5 {
            0 => Ok(Syndrome::Ack { credits: low }),
            1 => Ok(Syndrome::RnrNak { timer: low }),
            3 => match NakCode::from_code(low) {
                Some(code) => Ok(Syndrome::Nak(code)),
                None => Err(WireError::Malformed("AETH with a reserved NAK code")),
            },
            _ => Err(WireError::Malformed("AETH with a reserved syndrome type")),
        }
    }
}

/// ACK Extended Transport Header: the syndrome and the responder's MSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aeth {
    /// ACK, RNR NAK or NAK.
    pub syndrome: Syndrome,
    /// Message sequence number: messages the responder completed.
    pub msn: Msn,
}

impl Aeth {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; AETH_LEN] {
        let mut b = self.msn.get().to_be_bytes();
        b[0] = self.syndrome.to_byte();
        b
    }

    /// Decodes the header at the start of `b`; fails on a reserved syndrome.
    pub fn decode(b: &[u8]) -> Result<Aeth, WireError> {
        let b = head::<AETH_LEN>(b, "AETH")?;
        Ok(Aeth {
            syndrome: Syndrome::from_byte(b[0])?,
            msn: Msn::new(be_u32(b, 0)),
        })
    }
}

/// Atomic Extended Transport Header: the target and operands of an atomic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicEth {
    /// Virtual address of the 64-bit word at the responder.
    pub va: u64,
    /// Remote key of the responder's memory region.
    pub rkey: u32,
    /// The value to swap in (COMPARE_SWAP) or to add (FETCH_ADD).
    pub swap_add: u64,
    /// The value to compare with (COMPARE_SWAP; ignored by FETCH_ADD).
    pub compare: u64,
}

impl AtomicEth {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; ATOMIC_ETH_LEN] {
        let mut b = [0u8; ATOMIC_ETH_LEN];
        b[0..8].copy_from_slice(&self.va.to_be_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        b[12..20].copy_from_slice(&self.swap_add.to_be_bytes());
        b[20..28].copy_from_slice(&self.compare.to_be_bytes());
        b
    }

    /// Decodes the header at the start of `b` (any 28 bytes are one).
    pub fn decode(b: &[u8]) -> Result<AtomicEth, WireError> {
        let b = head::<ATOMIC_ETH_LEN>(b, "AtomicETH")?;
        Ok(AtomicEth {
            va: be_u64(b, 0),
            rkey: be_u32(b, 8),
            swap_add: be_u64(b, 12),
            compare: be_u64(b, 20),
        })
    }
}

/// Atomic ACK Extended Transport Header: the value the word had before the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicAckEth {
    /// The original remote data.
    pub orig: u64,
}

impl AtomicAckEth {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; ATOMIC_ACK_ETH_LEN] {
        self.orig.to_be_bytes()
    }

    /// Decodes the header at the start of `b` (any 8 bytes are one).
    pub fn decode(b: &[u8]) -> Result<AtomicAckEth, WireError> {
        let b = head::<ATOMIC_ACK_ETH_LEN>(b, "AtomicAckETH")?;
        Ok(AtomicAckEth {
            orig: u64::from_be_bytes(*b),
        })
    }
}

/// Immediate data: four bytes delivered with the completion at the responder,
/// read and written as a big-endian `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImmDt(pub u32);

impl ImmDt {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; IMMDT_LEN] {
        self.0.to_be_bytes()
    }

    /// Decodes the header at the start of `b` (any 4 bytes are one).
    pub fn decode(b: &[u8]) -> Result<ImmDt, WireError> {
        let b = head::<IMMDT_LEN>(b, "ImmDt")?;
        Ok(ImmDt(u32::from_be_bytes(*b)))
    }
}

/// One RoCEv2 packet: its headers and a view of its payload.
///
/// An extension header is `Some` exactly when the opcode has it
/// ([`Opcode::layout`]); [`Packet::decode`] guarantees it and [`Packet::encode`]
/// checks it. `payload` excludes the pad and the ICRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The Base Transport Header.
    pub bth: Bth,
    /// RDMA Extended Transport Header.
    pub reth: Option<Reth>,
    /// Atomic Extended Transport Header.
    pub atomic_eth: Option<AtomicEth>,
    /// ACK Extended Transport Header.
    pub aeth: Option<Aeth>,
    /// Atomic ACK Extended Transport Header.
    pub atomic_ack_eth: Option<AtomicAckEth>,
    /// Immediate data.
    pub imm: Option<ImmDt>,
    /// The payload, without pad.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// A packet with `bth`, no extension headers and no payload (set the fields
    /// the opcode needs before encoding).
    pub const fn new(bth: Bth) -> Packet<'a> {
        Packet {
            bth,
            reth: None,
            atomic_eth: None,
            aeth: None,
            atomic_ack_eth: None,
            imm: None,
            payload: &[],
        }
    }

    /// Number of pad bytes after the payload.
    #[inline]
    pub const fn pad_len(&self) -> usize {
        self.payload.len().wrapping_neg() & 3
    }

    /// Size of the encoded packet (the UDP payload): headers, payload, pad and ICRC.
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        self.bth.opcode.headers_len() + self.payload.len() + self.pad_len() + ICRC_LEN
    }

    /// Size of the encoded packet with a tag of `tag_len` bytes ([`Framing::tag_len`]).
    #[inline]
    pub const fn framed_len(&self, tag_len: usize) -> usize {
        self.encoded_len() + tag_len
    }

    /// Writes the packet into the start of `buf` and returns its length: the headers
    /// (with the BTH's pad count set from the payload, whatever `bth.pad_count` says),
    /// the payload, zero pad bytes, and the ICRC of the datagram that `hdrs` describes.
    ///
    /// Fails if the extension headers are not those of the opcode, if an opcode
    /// without payload has one, if `buf` is too small or if the packet does not fit
    /// one IP datagram. On failure the contents of `buf` are unspecified.
    pub fn encode(&self, hdrs: &IpUdp, buf: &mut [u8]) -> Result<usize, WireError> {
        self.encode_with(hdrs, None, buf)
    }

    /// As [`Packet::encode`], for the connection direction that `f` describes: with
    /// its key, the authentication tag follows the payload (see the
    /// [module docs](self)).
    pub fn encode_framed(&self, f: &Framing, buf: &mut [u8]) -> Result<usize, WireError> {
        self.encode_with(&f.hdrs, f.key.as_ref(), buf)
    }

    fn encode_with(
        &self,
        hdrs: &IpUdp,
        key: Option<&PacketKey>,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        let layout = self.bth.opcode.layout();
        if layout.reth != self.reth.is_some()
            || layout.atomic_eth != self.atomic_eth.is_some()
            || layout.aeth != self.aeth.is_some()
            || layout.atomic_ack_eth != self.atomic_ack_eth.is_some()
            || layout.immdt != self.imm.is_some()
        {
            return Err(WireError::Malformed(
                "extension headers do not match the opcode",
            ));
        }
        if !layout.payload && !self.payload.is_empty() {
            return Err(WireError::Malformed("payload on an opcode without one"));
        }
        let tag_len = if key.is_some() { AUTH_TAG_LEN } else { 0 };
        let len = self.framed_len(tag_len);
        let Some(out) = buf.get_mut(..len) else {
            return Err(WireError::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        };
        let pad = self.pad_len();
        let mut bth = self.bth;
        bth.pad_count = pad as u8;
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&bth.encode());
        if let Some(h) = &self.reth {
            put(&h.encode());
        }
        if let Some(h) = &self.atomic_eth {
            put(&h.encode());
        }
        if let Some(h) = &self.aeth {
            put(&h.encode());
        }
        if let Some(h) = &self.atomic_ack_eth {
            put(&h.encode());
        }
        if let Some(h) = &self.imm {
            put(&h.encode());
        }
        put(self.payload);
        if let Some(k) = key {
            let tag = k.tag(&out[..at]);
            out[at..at + AUTH_TAG_LEN].copy_from_slice(&tag);
            at += AUTH_TAG_LEN;
        }
        out[at..at + pad].fill(0);
        let (body, tail) = out.split_at_mut(len - ICRC_LEN);
        let crc = icrc::icrc(hdrs, body)?;
        tail.copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Decodes a UDP payload received in the datagram that `hdrs` describes.
    ///
    /// Checks the ICRC first (so that a corrupted packet is reported as
    /// [`WireError::Icrc`] whatever the corruption hit), then the structure as
    /// [`Packet::decode_unverified`] does.
    ///
    /// Over IPv4 the receiver cannot see the datagram's identification: the ICRC
    /// is accepted for `hdrs.ipv4_id` and for the identifications below
    /// [`icrc::GSO_MAX_SEGMENTS`] (the packets of a UDP GSO send carry their index
    /// there, [`icrc::ipv4_id_mask`]).
    pub fn decode(hdrs: &IpUdp, datagram: &'a [u8]) -> Result<Packet<'a>, WireError> {
        Self::check_icrc(hdrs, datagram)?;
        Self::decode_unverified(datagram)
    }

    /// As [`Packet::decode`], for the connection direction that `f` describes: with
    /// its key, the packet must end its payload with the right authentication tag
    /// ([`WireError::Auth`] otherwise), which the returned payload does not include.
    ///
    /// With a key, a packet whose tag is right is intact (a corruption that keeps
    /// the tag right is as unlikely as a forgery), so its ICRC is not computed: one
    /// pass less over every packet received. A packet that fails is checked in the
    /// order of [`Packet::decode`]: the ICRC (so that corruption is reported as
    /// [`WireError::Icrc`]), then the structure, then the tag.
    pub fn decode_framed(f: &Framing, datagram: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let Some(key) = &f.key else {
            Self::check_icrc(&f.hdrs, datagram)?;
            return Self::decode_unverified(datagram);
        };
        if let Ok(p) = Self::check_tag(key, datagram) {
            return Ok(p);
        }
        Self::check_icrc(&f.hdrs, datagram)?;
        Self::check_tag(key, datagram)
    }

    /// The structure, then the tag and the pad, of an authenticated packet.
    fn check_tag(key: &PacketKey, datagram: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let (p, covered) = Self::decode_structure(datagram, AUTH_TAG_LEN)?;
        let (tag, pad) = datagram[covered..datagram.len() - ICRC_LEN].split_at(AUTH_TAG_LEN);
        if !key.verify(&datagram[..covered], tag) {
            return Err(WireError::Auth);
        }
        // The pad is outside the tag: zero, so that no bit of the packet can be
        // changed unnoticed.
        if pad.iter().any(|&b| b != 0) {
            return Err(WireError::Malformed("pad bytes that are not zero"));
        }
        Ok(p)
    }

    /// Decodes an authenticated packet without checking its ICRC or its tag: the
    /// packet, and where its tag starts.
    pub fn decode_unverified_tagged(datagram: &'a [u8]) -> Result<(Packet<'a>, usize), WireError> {
        Self::decode_structure(datagram, AUTH_TAG_LEN)
    }

    /// Checks the ICRC of `datagram` for `hdrs` (see [`Packet::decode`]).
    fn check_icrc(hdrs: &IpUdp, datagram: &[u8]) -> Result<(), WireError> {
        let body_len = check_min_len(datagram)?;
        let (body, tail) = datagram.split_at(body_len);
        let mut carried = [0u8; ICRC_LEN];
        carried.copy_from_slice(tail);
        let carried = u32::from_le_bytes(carried);
        let computed = icrc::icrc(hdrs, body)?;
        if carried != computed && !Self::explained_by_id(hdrs, body_len, carried, computed) {
            return Err(WireError::Icrc { carried, computed });
        }
        Ok(())
    }

    /// Whether an IPv4 packet's ICRC is right for an identification below
    /// [`icrc::GSO_MAX_SEGMENTS`] (the one computed was for `hdrs.ipv4_id`).
    fn explained_by_id(hdrs: &IpUdp, body_len: usize, carried: u32, computed: u32) -> bool {
        if !hdrs.src.ip().to_canonical().is_ipv4() {
            return false;
        }
        // Linear: the difference is the XOR of the two identifications' shares.
        let base = if hdrs.ipv4_id == 0 {
            0
        } else {
            // `computed` is for `ipv4_id`: take its share out (by its low bits
            // only when it is small; a large one is matched exactly only).
            if usize::from(hdrs.ipv4_id) >= icrc::GSO_MAX_SEGMENTS {
                return false;
            }
            icrc::ipv4_id_mask(body_len, hdrs.ipv4_id)
        };
        icrc::ipv4_id_of(body_len, carried ^ computed ^ base).is_some()
    }

    /// Decodes a UDP payload without checking its ICRC (its last four bytes).
    ///
    /// Checks that the opcode is a supported RC opcode, the transport version, that
    /// the length is a multiple of four and holds the headers the opcode implies, that
    /// an opcode without payload has none (and no pad), and that the pad count fits
    /// the bytes after the headers.
    pub fn decode_unverified(datagram: &'a [u8]) -> Result<Packet<'a>, WireError> {
        Self::decode_structure(datagram, 0).map(|(p, _)| p)
    }

    /// Decodes the structure of a packet whose payload ends with `tag_len` bytes of
    /// tag: the packet (its payload without the tag) and where the tag starts.
    fn decode_structure(
        datagram: &'a [u8],
        tag_len: usize,
    ) -> Result<(Packet<'a>, usize), WireError> {
        let body_len = check_min_len(datagram)?;
        if datagram.len() % 4 != 0 {
            return Err(WireError::Malformed(
                "length is not a multiple of four bytes",
            ));
        }
        let bth = Bth::decode(datagram)?;
        let layout = bth.opcode.layout();
        let headers_len = layout.headers_len();
        // `check_min_len` left at least a BTH before the ICRC.
        let mut rest = &datagram[BTH_LEN..body_len];
        if rest.len() < headers_len - BTH_LEN {
            return Err(WireError::Truncated {
                what: "extension headers",
                need: headers_len - BTH_LEN,
                have: rest.len(),
            });
        }
        let mut p = Packet::new(bth);
        if layout.reth {
            p.reth = Some(Reth::decode(rest)?);
            rest = &rest[RETH_LEN..];
        }
        if layout.atomic_eth {
            p.atomic_eth = Some(AtomicEth::decode(rest)?);
            rest = &rest[ATOMIC_ETH_LEN..];
        }
        if layout.aeth {
            p.aeth = Some(Aeth::decode(rest)?);
            rest = &rest[AETH_LEN..];
        }
        if layout.atomic_ack_eth {
            p.atomic_ack_eth = Some(AtomicAckEth::decode(rest)?);
            rest = &rest[ATOMIC_ACK_ETH_LEN..];
        }
        if layout.immdt {
            p.imm = Some(ImmDt::decode(rest)?);
            rest = &rest[IMMDT_LEN..];
        }
        let pad = usize::from(bth.pad_count);
        if !layout.payload {
            if rest.len() != tag_len {
                return Err(WireError::Malformed(if rest.len() < tag_len {
                    "no room for the authentication tag"
                } else {
                    "bytes after the headers of an opcode without payload"
                }));
            }
            if pad != 0 {
                return Err(WireError::Malformed(
                    "pad count on a packet without payload",
                ));
            }
        }
        let Some(payload_len) = rest.len().checked_sub(pad) else {
            return Err(WireError::Malformed("pad count larger than the payload"));
        };
        let Some(payload_len) = payload_len.checked_sub(tag_len) else {
            return Err(WireError::Malformed("no room for the authentication tag"));
        };
        p.payload = &rest[..payload_len];
        Ok((p, headers_len + payload_len))
    }
}

/// Checks that `datagram` holds a BTH and an ICRC; returns the length without the ICRC.
#[inline]
fn check_min_len(datagram: &[u8]) -> Result<usize, WireError> {
    if datagram.len() < BTH_LEN + ICRC_LEN {
        return Err(WireError::Truncated {
            what: "BTH and ICRC",
            need: BTH_LEN + ICRC_LEN,
            have: datagram.len(),
        });
    }
    Ok(datagram.len() - ICRC_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn hdrs() -> IpUdp {
        IpUdp::new(
            "10.0.0.1:49152".parse().unwrap(),
            "10.0.0.2:4791".parse().unwrap(),
        )
    }

    fn qpn(v: u32) -> Qpn {
        Qpn::new(v).unwrap()
    }

    /// Rewrites the ICRC at the end of `b` to match its contents.
    fn seal(h: &IpUdp, b: &mut [u8]) {
        let n = b.len() - ICRC_LEN;
        let c = icrc::icrc(h, &b[..n]).unwrap();
        b[n..].copy_from_slice(&c.to_le_bytes());
    }

    fn encode_vec(p: &Packet<'_>, h: &IpUdp) -> Vec<u8> {
        let mut buf = vec![0u8; p.encoded_len()];
        let n = p.encode(h, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn opcode_codes_and_layouts() {
        // (code, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, payload), from the
        // specification's table of RC opcodes and the headers each carries.
        #[rustfmt::skip]
        let table: [(u8, [bool; 6]); 21] = [
            (0x00, [false, false, false, false, false, true]), // SEND_FIRST
            (0x01, [false, false, false, false, false, true]), // SEND_MIDDLE
            (0x02, [false, false, false, false, false, true]), // SEND_LAST
            (0x03, [false, false, false, false, true, true]),  // SEND_LAST_WITH_IMMEDIATE
            (0x04, [false, false, false, false, false, true]), // SEND_ONLY
            (0x05, [false, false, false, false, true, true]),  // SEND_ONLY_WITH_IMMEDIATE
            (0x06, [true, false, false, false, false, true]),  // RDMA_WRITE_FIRST
            (0x07, [false, false, false, false, false, true]), // RDMA_WRITE_MIDDLE
            (0x08, [false, false, false, false, false, true]), // RDMA_WRITE_LAST
            (0x09, [false, false, false, false, true, true]),  // RDMA_WRITE_LAST_WITH_IMMEDIATE
            (0x0A, [true, false, false, false, false, true]),  // RDMA_WRITE_ONLY
            (0x0B, [true, false, false, false, true, true]),   // RDMA_WRITE_ONLY_WITH_IMMEDIATE
            (0x0C, [true, false, false, false, false, false]), // RDMA_READ_REQUEST
            (0x0D, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_FIRST
            (0x0E, [false, false, false, false, false, true]), // RDMA_READ_RESPONSE_MIDDLE
            (0x0F, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_LAST
            (0x10, [false, false, true, false, false, true]),  // RDMA_READ_RESPONSE_ONLY
            (0x11, [false, false, true, false, false, false]), // ACKNOWLEDGE
            (0x12, [false, false, true, true, false, false]),  // ATOMIC_ACKNOWLEDGE
            (0x13, [false, true, false, false, false, false]), // COMPARE_SWAP
            (0x14, [false, true, false, false, false, false]), // FETCH_ADD
        ];
        assert_eq!(Opcode::ALL.len(), table.len());
        for (op, (code, l)) in Opcode::ALL.iter().zip(table) {
            assert_eq!(op.code(), code, "{op:?}");
            assert_eq!(Opcode::from_code(code), Some(*op));
            let got = op.layout();
            assert_eq!(
                [
                    got.reth,
                    got.atomic_eth,
                    got.aeth,
                    got.atomic_ack_eth,
                    got.immdt,
                    got.payload
                ],
                l,
                "{}",
                op.name()
            );
        }
        assert_eq!(Opcode::RdmaWriteOnlyWithImmediate.headers_len(), 32);
        assert_eq!(Opcode::AtomicAcknowledge.headers_len(), 24);
        assert_eq!(
            Opcode::ALL.iter().map(|o| o.headers_len()).max(),
            Some(MAX_HEADERS_LEN)
        );
        // Reserved RC codes, and other transports (UC, RD, UD, CNP).
        for c in [0x15, 0x16, 0x17, 0x1F, 0x20, 0x24, 0x40, 0x64, 0x81, 0xFF] {
            assert_eq!(Opcode::from_code(c), None, "{c:#x}");
        }
        assert!(Opcode::Acknowledge.is_response());
        assert!(!Opcode::FetchAdd.is_response());
    }

    #[test]
    fn bth_golden_bytes() {
        // RDMA_WRITE_ONLY (0x0A); SE=1 M=0 PadCnt=2 TVer=0 -> 1_0_10_0000 = 0xA0;
        // P_Key 0xFFFF; FECN=0 BECN=1 resv6=0 -> 0_1_000000 = 0x40; DestQP 0x123456;
        // AckReq=1 resv7=0 -> 0x80; PSN 0xABCDEF.
        let b = Bth {
            opcode: Opcode::RdmaWriteOnly,
            solicited: true,
            mig_req: false,
            pad_count: 2,
            pkey: 0xFFFF,
            fecn: false,
            becn: true,
            dest_qp: qpn(0x12_3456),
            ack_req: true,
            psn: Psn::new(0xAB_CDEF),
        };
        let want = [
            0x0A, 0xA0, 0xFF, 0xFF, 0x40, 0x12, 0x34, 0x56, 0x80, 0xAB, 0xCD, 0xEF,
        ];
        assert_eq!(b.encode(), want);
        assert_eq!(Bth::decode(&want).unwrap(), b);
        // ACKNOWLEDGE (0x11); SE=0 M=1 PadCnt=0 TVer=0 -> 0_1_00_0000 = 0x40; P_Key
        // 0x8001; FECN=1 BECN=0 -> 0x80; DestQP 1; AckReq=0; PSN 0xFFFFFF.
        let b = Bth {
            opcode: Opcode::Acknowledge,
            solicited: false,
            mig_req: true,
            pad_count: 0,
            pkey: 0x8001,
            fecn: true,
            becn: false,
            dest_qp: qpn(1),
            ack_req: false,
            psn: Psn::new(0xFF_FFFF),
        };
        let want = [
            0x11, 0x40, 0x80, 0x01, 0x80, 0x00, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(b.encode(), want);
        assert_eq!(Bth::decode(&want).unwrap(), b);
        // Reserved bits are ignored: resv6 (byte 4, bits 5..0) and resv7 (byte 8, 6..0).
        let mut r = want;
        r[4] |= 0x3F;
        r[8] |= 0x7F;
        assert_eq!(Bth::decode(&r).unwrap(), b);
    }

    #[test]
    fn bth_rejects_bad_input() {
        let good = Bth::new(Opcode::SendOnly, qpn(5), Psn::new(9)).encode();
        assert!(matches!(
            Bth::decode(&good[..11]),
            Err(WireError::Truncated {
                need: 12,
                have: 11,
                ..
            })
        ));
        let mut b = good;
        b[1] |= 0x01; // TVer 1
        assert_eq!(Bth::decode(&b), Err(WireError::UnsupportedVersion(1)));
        let mut b = good;
        b[0] = 0x64; // UD SEND_ONLY
        assert_eq!(Bth::decode(&b), Err(WireError::UnsupportedOpcode(0x64)));
    }

    #[test]
    fn extension_header_golden_bytes() {
        // RETH: VA 0x0102030405060708 (8 bytes), R_Key 0x090A0B0C, DMA length 0x0D0E0F10.
        let r = Reth {
            va: 0x0102_0304_0506_0708,
            rkey: 0x090A_0B0C,
            dma_len: 0x0D0E_0F10,
        };
        let want: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(r.encode(), want);
        assert_eq!(Reth::decode(&want).unwrap(), r);

        // AETH: syndrome byte, then MSN (24 bits).
        // ACK with the "no credits" count: 0_00_11111 = 0x1F; MSN 0x000102.
        let cases = [
            (Syndrome::Ack { credits: 0x1F }, 0x1F),
            (Syndrome::Ack { credits: 0 }, 0x00),
            // RNR NAK, timer 14: 0_01_01110 = 0x2E.
            (Syndrome::RnrNak { timer: 14 }, 0x2E),
            // NAK: 0_11_ccccc with the NAK code.
            (Syndrome::Nak(NakCode::PsnSequenceError), 0x60),
            (Syndrome::Nak(NakCode::InvalidRequest), 0x61),
            (Syndrome::Nak(NakCode::RemoteAccessError), 0x62),
            (Syndrome::Nak(NakCode::RemoteOperationalError), 0x63),
            (Syndrome::Nak(NakCode::InvalidRdRequest), 0x64),
        ];
        for (syndrome, byte) in cases {
            let a = Aeth {
                syndrome,
                msn: Msn::new(0x00_0102),
            };
            let want = [byte, 0x00, 0x01, 0x02];
            assert_eq!(a.encode(), want, "{syndrome:?}");
            assert_eq!(Aeth::decode(&want).unwrap(), a);
        }
        // Reserved: bit 7, type 10, NAK codes 5..=31.
        for byte in [0x80, 0x9F, 0x40, 0x5F, 0x65, 0x7F] {
            assert!(
                matches!(Aeth::decode(&[byte, 0, 0, 0]), Err(WireError::Malformed(_))),
                "{byte:#x}"
            );
        }

        // AtomicETH: VA, R_Key, swap/add data, compare data.
        let a = AtomicEth {
            va: 0x1122_3344_5566_7788,
            rkey: 0x99AA_BBCC,
            swap_add: 1,
            compare: 0xFFFF_FFFF_FFFF_FFFE,
        };
        let want = [
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // VA
            0x99, 0xAA, 0xBB, 0xCC, // R_Key
            0, 0, 0, 0, 0, 0, 0, 1, // swap/add
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // compare
        ];
        assert_eq!(a.encode(), want);
        assert_eq!(AtomicEth::decode(&want).unwrap(), a);

        // AtomicAckETH: original remote data.
        let a = AtomicAckEth {
            orig: 0x0123_4567_89AB_CDEF,
        };
        let want = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
        assert_eq!(a.encode(), want);
        assert_eq!(AtomicAckEth::decode(&want).unwrap(), a);

        // ImmDt: four bytes, big-endian.
        assert_eq!(ImmDt(0xDEAD_BEEF).encode(), [0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(
            ImmDt::decode(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap(),
            ImmDt(0xDEAD_BEEF)
        );

        // Short input.
        assert!(Reth::decode(&want).is_err());
        assert!(AtomicEth::decode(&[0; 27]).is_err());
        assert!(AtomicAckEth::decode(&[0; 7]).is_err());
        assert!(Aeth::decode(&[0; 3]).is_err());
        assert!(ImmDt::decode(&[0; 3]).is_err());
    }

    #[test]
    fn packet_golden_bytes() {
        // SEND_ONLY_WITH_IMMEDIATE to QP 0x11, PSN 7, SE and AckReq, immediate
        // 0xDEADBEEF, payload "abcde": 5 bytes, so PadCnt 3 (byte 1: 1_0_11_0000 = 0xB0).
        // The ICRC was computed independently (Python's zlib.crc32 over the masked
        // pseudo-packet for 10.0.0.1:49152 -> 10.0.0.2:4791, IPv4 id 0, DF).
        let mut bth = Bth::new(Opcode::SendOnlyWithImmediate, qpn(0x11), Psn::new(7));
        bth.solicited = true;
        bth.ack_req = true;
        let mut p = Packet::new(bth);
        p.imm = Some(ImmDt(0xDEAD_BEEF));
        p.payload = b"abcde";
        #[rustfmt::skip]
        let want = [
            0x05, 0xB0, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x11, 0x80, 0x00, 0x00, 0x07, // BTH
            0xDE, 0xAD, 0xBE, 0xEF, // ImmDt
            b'a', b'b', b'c', b'd', b'e', // payload
            0, 0, 0, // pad
            0x87, 0xF9, 0x1B, 0xD3, // ICRC
        ];
        assert_eq!(encode_vec(&p, &hdrs()), want);
        let mut q = p;
        q.bth.pad_count = 3;
        assert_eq!(Packet::decode(&hdrs(), &want).unwrap(), q);

        // The same packet between fd00::1 and fd00::2 (same ports).
        let h6 = IpUdp::new(
            "[fd00::1]:49152".parse().unwrap(),
            "[fd00::2]:4791".parse().unwrap(),
        );
        let b6 = encode_vec(&p, &h6);
        assert_eq!(b6[..24], want[..24]);
        assert_eq!(b6[24..], [0x9E, 0x4A, 0xD8, 0x62]);
    }

    #[test]
    fn structural_errors_with_a_valid_icrc() {
        let h = hdrs();
        let bth = |op: Opcode| Bth::new(op, qpn(3), Psn::new(1)).encode();
        let reason = |mut b: Vec<u8>| {
            seal(&h, &mut b);
            let e = Packet::decode(&h, &b).unwrap_err();
            assert_eq!(Packet::decode_unverified(&b).unwrap_err(), e);
            e
        };
        // Shorter than BTH + ICRC.
        assert!(matches!(
            Packet::decode(&h, &[0; 15]),
            Err(WireError::Truncated { need: 16, .. })
        ));
        // Not a multiple of four.
        let mut b = bth(Opcode::SendOnly).to_vec();
        b.extend_from_slice(&[1, 0, 0, 0, 0]);
        assert!(matches!(reason(b), WireError::Malformed(_)));
        // Unsupported opcodes and version.
        for code in [0x15, 0x17, 0x24, 0x64, 0x81] {
            let mut b = bth(Opcode::SendOnly).to_vec();
            b[0] = code;
            b.extend_from_slice(&[0; 4]);
            assert_eq!(reason(b), WireError::UnsupportedOpcode(code));
        }
        let mut b = bth(Opcode::SendOnly).to_vec();
        b[1] |= 0x0F;
        b.extend_from_slice(&[0; 4]);
        assert_eq!(reason(b), WireError::UnsupportedVersion(15));
        // An ACK without its AETH; a read request with half a RETH.
        let mut b = bth(Opcode::Acknowledge).to_vec();
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(reason(b), WireError::Truncated { .. }));
        let mut b = bth(Opcode::RdmaReadRequest).to_vec();
        b.extend_from_slice(&[0; 8 + 4]);
        assert!(matches!(
            reason(b),
            WireError::Truncated {
                need: 16,
                have: 8,
                ..
            }
        ));
        // Bytes after an opcode without payload, and a pad count on one.
        let mut b = bth(Opcode::Acknowledge).to_vec();
        b.extend_from_slice(&[0; 4 + 4 + 4]);
        assert!(matches!(reason(b), WireError::Malformed(_)));
        let mut b = bth(Opcode::Acknowledge).to_vec();
        b[1] |= 0x10;
        b.extend_from_slice(&[0; 4 + 4]);
        assert!(matches!(reason(b), WireError::Malformed(_)));
        // A pad count larger than the bytes after the headers.
        let mut b = bth(Opcode::SendOnly).to_vec();
        b[1] |= 0x30;
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(reason(b), WireError::Malformed(_)));
        // A reserved syndrome.
        let mut b = bth(Opcode::Acknowledge).to_vec();
        b.extend_from_slice(&[0x40, 0, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(reason(b), WireError::Malformed(_)));
        // An empty send is fine, with or without pad bytes being all that is left.
        let mut b = bth(Opcode::SendOnly).to_vec();
        b.extend_from_slice(&[0; 4]);
        seal(&h, &mut b);
        assert_eq!(Packet::decode(&h, &b).unwrap().payload, b"");
        let mut b = bth(Opcode::SendOnly).to_vec();
        b[1] |= 0x30;
        b.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        seal(&h, &mut b);
        assert_eq!(Packet::decode(&h, &b).unwrap().payload, [7]);
    }

    #[test]
    fn encoder_rejects_bad_packets() {
        let h = hdrs();
        let mut buf = [0u8; 128];
        let mut p = Packet::new(Bth::new(Opcode::SendOnly, qpn(1), Psn::new(0)));
        p.reth = Some(Reth {
            va: 0,
            rkey: 0,
            dma_len: 0,
        });
        assert!(matches!(
            p.encode(&h, &mut buf),
            Err(WireError::Malformed(_))
        ));
        let mut p = Packet::new(Bth::new(Opcode::RdmaWriteOnly, qpn(1), Psn::new(0)));
        assert!(matches!(
            p.encode(&h, &mut buf),
            Err(WireError::Malformed(_))
        ));
        p.reth = Some(Reth {
            va: 0,
            rkey: 0,
            dma_len: 3,
        });
        p.payload = b"xyz";
        assert_eq!(p.encode(&h, &mut buf), Ok(12 + 16 + 4 + 4));
        assert_eq!(
            p.encode(&h, &mut buf[..35]),
            Err(WireError::BufferTooSmall { need: 36, have: 35 })
        );
        let mut p = Packet::new(Bth::new(Opcode::Acknowledge, qpn(1), Psn::new(0)));
        p.aeth = Some(Aeth {
            syndrome: Syndrome::Ack { credits: 0 },
            msn: Msn::new(0),
        });
        p.payload = b"no";
        assert!(matches!(
            p.encode(&h, &mut buf),
            Err(WireError::Malformed(_))
        ));
        p.payload = b"";
        let mixed = IpUdp::new(h.src, "[::1]:4791".parse::<SocketAddr>().unwrap());
        assert!(matches!(
            p.encode(&mixed, &mut buf),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(p.encode(&h, &mut buf), Ok(20));
        let e: crate::Error = WireError::Icrc {
            carried: 1,
            computed: 2,
        }
        .into();
        assert!(matches!(
            e,
            crate::Error::Malformed {
                what: "roce packet",
                ..
            }
        ));
    }

    fn key(b: u8) -> PacketKey {
        PacketKey::from_bytes([b; 32])
    }

    fn keyed(h: IpUdp, b: u8) -> Framing {
        Framing {
            hdrs: h,
            key: Some(key(b)),
        }
    }

    fn encode_framed_vec(p: &Packet<'_>, f: &Framing) -> Vec<u8> {
        let mut buf = vec![0u8; p.framed_len(f.tag_len())];
        let n = p.encode_framed(f, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn authenticated_packets_carry_their_tag_before_the_pad() {
        let h = hdrs();
        let f = keyed(h, 1);
        let mut p = Packet::new(Bth::new(Opcode::SendOnly, qpn(0x11), Psn::new(7)));
        p.payload = b"hello";
        let b = encode_framed_vec(&p, &f);
        // BTH, payload, tag, pad (that of the payload), ICRC.
        assert_eq!(b.len(), 12 + 5 + 16 + 3 + 4);
        assert_eq!((b[1] >> 4) & 3, 3);
        assert_eq!(b[12..17], *b"hello");
        assert_eq!(b[17..33], key(1).tag(&b[..17]));
        assert_eq!(b[33..36], [0, 0, 0]);
        assert_eq!(Packet::decode_framed(&f, &b).unwrap(), decoded(&p));
        assert_eq!(
            Packet::decode_unverified_tagged(&b).unwrap(),
            (decoded(&p), 17)
        );
        // Any RoCEv2 decoder sees a valid packet whose payload ends with the tag.
        assert_eq!(Packet::decode(&h, &b).unwrap().payload, &b[12..33]);
        // Another connection's key, or none: not this connection's packet.
        assert_eq!(
            Packet::decode_framed(&keyed(h, 2), &b),
            Err(WireError::Auth)
        );
        let plain = encode_vec(&p, &h);
        assert!(Packet::decode_framed(&f, &plain).is_err());
        assert_eq!(
            Packet::decode_framed(&Framing::plain(h), &b)
                .unwrap()
                .payload,
            &b[12..33]
        );
        // An ACK: the tag is all that follows the AETH.
        let mut a = Packet::new(Bth::new(Opcode::Acknowledge, qpn(0x11), Psn::new(6)));
        a.aeth = Some(Aeth {
            syndrome: Syndrome::Ack { credits: 31 },
            msn: Msn::new(1),
        });
        let b = encode_framed_vec(&a, &f);
        assert_eq!(b.len(), 12 + 4 + 16 + 4);
        assert_eq!(Packet::decode_framed(&f, &b).unwrap(), a);
        assert!(matches!(
            Packet::decode(&h, &b),
            Err(WireError::Malformed(_))
        ));
        // A right tag is enough; a corruption is still reported as one.
        let mut c = encode_framed_vec(&a, &f);
        let n = c.len();
        c[n - 1] ^= 1;
        assert_eq!(Packet::decode_framed(&f, &c).unwrap(), a);
        c[n - 1] ^= 1;
        c[13] ^= 1;
        assert!(matches!(
            Packet::decode_framed(&f, &c),
            Err(WireError::Icrc { .. })
        ));
        // Too short for a tag.
        let mut short = encode_vec(&a, &h);
        assert!(matches!(
            Packet::decode_framed(&f, &short),
            Err(WireError::Malformed(_))
        ));
        short.truncate(12 + 4);
        short.extend_from_slice(&[0; 8 + 4]);
        seal(&h, &mut short);
        assert!(matches!(
            Packet::decode_framed(&f, &short),
            Err(WireError::Malformed(_))
        ));
    }

    /// What someone without the key who saw a packet can do: renumber it (PSN,
    /// QPN), change any header or payload bit, and recompute the ICRC. Every
    /// such packet fails (its tag, or its structure), for every opcode; and so
    /// does a packet with another IPv4 identification only by its ICRC.
    #[test]
    fn forged_packets_with_a_valid_icrc_fail() {
        let h = hdrs();
        let f = keyed(h, 9);
        for &op in Opcode::ALL {
            let p = sample_packet(op, b"hello");
            let good = encode_framed_vec(&p, &f);
            assert_eq!(Packet::decode_framed(&f, &good).unwrap(), decoded(&p));
            let body = good.len() - ICRC_LEN;
            for bit in 0..body * 8 {
                let mut b = good.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                seal(&h, &mut b);
                let r = Packet::decode_framed(&f, &b);
                assert!(r.is_err(), "{op:?} bit {bit}: {r:?}");
                let tag = body - p.pad_len() - AUTH_TAG_LEN..body - p.pad_len();
                if (5..12).contains(&(bit / 8)) || tag.contains(&(bit / 8)) {
                    // QPN, PSN, tag: only the tag can tell (a flipped header
                    // bit may also make the packet malformed).
                    assert_eq!(r, Err(WireError::Auth), "{op:?} bit {bit}");
                }
            }
            // The next PSN, the right QPN, a valid ICRC: still no.
            let mut next = p;
            next.bth.psn = p.bth.psn.wrapping_add(1);
            let mut b = encode_framed_vec(&next, &keyed(h, 8));
            assert_eq!(Packet::decode_framed(&f, &b), Err(WireError::Auth));
            // A renumbered copy of the right packet.
            b.copy_from_slice(&good);
            b[9..12].copy_from_slice(&next.bth.psn.get().to_be_bytes()[1..]);
            seal(&h, &mut b);
            assert_eq!(Packet::decode_framed(&f, &b), Err(WireError::Auth));
        }
    }

    #[test]
    fn sequence_numbers_wrap_at_24_bits() {
        assert_eq!(Psn::new(0x0100_0005).get(), 5);
        assert_eq!(Psn::new(Psn::MAX).wrapping_add(1), Psn::new(0));
        assert_eq!(Psn::new(2).distance_from(Psn::new(Psn::MAX)), 3);
        assert_eq!(Psn::new(Psn::MAX).distance_from(Psn::new(2)), -3);
        assert_eq!(Psn::new(0x80_0000).distance_from(Psn::new(0)), -0x80_0000);
        assert_eq!(Psn::new(0x7F_FFFF).distance_from(Psn::new(0)), 0x7F_FFFF);
        assert_eq!(Msn::new(u32::MAX).get(), Msn::MAX);
        assert_eq!(Qpn::new(Qpn::MAX).map(Qpn::get), Some(0xFF_FFFF));
        assert_eq!(Qpn::new(1 << 24), None);
    }

    /// Every bit of every packet is covered by the ICRC, except byte 4 of the BTH.
    #[test]
    fn every_flipped_bit_fails_the_icrc() {
        let h = hdrs();
        for &op in Opcode::ALL {
            let p = sample_packet(op, b"hello");
            let good = encode_vec(&p, &h);
            assert_eq!(Packet::decode(&h, &good).unwrap(), decoded(&p));
            for bit in 0..good.len() * 8 {
                let mut b = good.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let r = Packet::decode(&h, &b);
                if bit / 8 == 4 {
                    // FECN, BECN, resv6: masked, so not covered.
                    let q = r.unwrap();
                    assert_eq!((q.bth.fecn, q.bth.becn), (bit == 39, bit == 38));
                } else {
                    assert!(
                        matches!(r, Err(WireError::Icrc { .. })),
                        "{op:?} bit {bit}: {r:?}"
                    );
                }
            }
            // The wrong IP or UDP headers fail too.
            assert!(matches!(
                Packet::decode(&h.reversed(), &good),
                Err(WireError::Icrc { .. })
            ));
        }
    }

    #[test]
    fn icrcs_for_the_identifications_of_a_gso_send_are_accepted() {
        let h = hdrs();
        let p = sample_packet(Opcode::RdmaWriteMiddle, &[9u8; 1024]);
        let good = encode_vec(&p, &h);
        for id in [0u16, 1, 2, 14, 63, 64, 65, 0x1234, 0xFFFF] {
            let mut b = good.clone();
            seal(&IpUdp { ipv4_id: id, ..h }, &mut b);
            let r = Packet::decode(&h, &b);
            if usize::from(id) < icrc::GSO_MAX_SEGMENTS {
                assert_eq!(r.unwrap(), decoded(&p), "id {id}");
                // A receiver that assumes another small identification agrees.
                assert!(Packet::decode(&IpUdp { ipv4_id: 5, ..h }, &b).is_ok());
            } else {
                assert!(matches!(r, Err(WireError::Icrc { .. })), "id {id}: {r:?}");
                // Unless it knows the identification exactly.
                assert!(Packet::decode(&IpUdp { ipv4_id: id, ..h }, &b).is_ok());
            }
            // Flipped bits still fail with any of them.
            for bit in [0usize, 100, 8 * b.len() - 33, 8 * b.len() - 1] {
                let mut c = b.clone();
                c[bit / 8] ^= 1 << (bit % 8);
                assert!(Packet::decode(&h, &c).is_err(), "id {id} bit {bit}");
            }
        }
        // IPv6 has no identification: only the exact ICRC passes.
        let h6 = IpUdp::new(
            "[fd00::1]:49152".parse().unwrap(),
            "[fd00::2]:4791".parse().unwrap(),
        );
        let mut b = encode_vec(&p, &h6);
        assert!(Packet::decode(&h6, &b).is_ok());
        let n = b.len();
        let mask = icrc::ipv4_id_mask(n - ICRC_LEN, 1).to_le_bytes();
        for (x, m) in b[n - ICRC_LEN..].iter_mut().zip(mask) {
            *x ^= m;
        }
        assert!(Packet::decode(&h6, &b).is_err());
    }

    /// A packet of `op` with every header it needs.
    fn sample_packet(op: Opcode, payload: &[u8]) -> Packet<'_> {
        let l = op.layout();
        let mut p = Packet::new(Bth::new(op, qpn(0x00AB_CDEF), Psn::new(0x12_3456)));
        p.bth.ack_req = true;
        p.reth = l.reth.then_some(Reth {
            va: 0x7F00_0000_1000,
            rkey: 0x1234,
            dma_len: 4096,
        });
        p.atomic_eth = l.atomic_eth.then_some(AtomicEth {
            va: 0x7F00_0000_2000,
            rkey: 0x5678,
            swap_add: 42,
            compare: 7,
        });
        p.aeth = l.aeth.then_some(Aeth {
            syndrome: Syndrome::Ack { credits: 3 },
            msn: Msn::new(99),
        });
        p.atomic_ack_eth = l.atomic_ack_eth.then_some(AtomicAckEth { orig: 41 });
        p.imm = l.immdt.then_some(ImmDt(0xC0FFEE));
        if l.payload {
            p.payload = payload;
        }
        p
    }

    /// What decoding the encoding of `p` gives: the pad count filled in.
    fn decoded<'a>(p: &Packet<'a>) -> Packet<'a> {
        let mut q = *p;
        q.bth.pad_count = p.pad_len() as u8;
        q
    }

    prop_compose! {
        fn any_bth()(
            op in proptest::sample::select(Opcode::ALL),
            solicited in any::<bool>(), mig_req in any::<bool>(), pad_count in 0u8..4,
            pkey in any::<u16>(), fecn in any::<bool>(), becn in any::<bool>(),
            dest_qp in 0..=Qpn::MAX, ack_req in any::<bool>(), psn in 0..=Psn::MAX,
        ) -> Bth {
            Bth {
                opcode: op, solicited, mig_req, pad_count, pkey, fecn, becn,
                dest_qp: qpn(dest_qp), ack_req, psn: Psn::new(psn),
            }
        }
    }

    fn any_syndrome() -> impl Strategy<Value = Syndrome> {
        prop_oneof![
            (0u8..32).prop_map(|credits| Syndrome::Ack { credits }),
            (0u8..32).prop_map(|timer| Syndrome::RnrNak { timer }),
            (0u8..5).prop_map(|c| Syndrome::Nak(NakCode::from_code(c).unwrap())),
        ]
    }

    prop_compose! {
        fn any_aeth()(syndrome in any_syndrome(), msn in 0..=Msn::MAX) -> Aeth {
            Aeth { syndrome, msn: Msn::new(msn) }
        }
    }

    prop_compose! {
        fn any_reth()(va in any::<u64>(), rkey in any::<u32>(), dma_len in any::<u32>()) -> Reth {
            Reth { va, rkey, dma_len }
        }
    }

    prop_compose! {
        fn any_atomic_eth()(va in any::<u64>(), rkey in any::<u32>(), swap_add in any::<u64>(),
                            compare in any::<u64>()) -> AtomicEth {
            AtomicEth { va, rkey, swap_add, compare }
        }
    }

    /// The parts of a random packet (the payload is owned; build with `packet`).
    #[derive(Debug, Clone)]
    struct Parts {
        bth: Bth,
        reth: Reth,
        atomic_eth: AtomicEth,
        aeth: Aeth,
        orig: u64,
        imm: u32,
        payload: Vec<u8>,
    }

    impl Parts {
        fn packet(&self) -> Packet<'_> {
            let l = self.bth.opcode.layout();
            Packet {
                bth: self.bth,
                reth: l.reth.then_some(self.reth),
                atomic_eth: l.atomic_eth.then_some(self.atomic_eth),
                aeth: l.aeth.then_some(self.aeth),
                atomic_ack_eth: l.atomic_ack_eth.then_some(AtomicAckEth { orig: self.orig }),
                imm: l.immdt.then_some(ImmDt(self.imm)),
                payload: if l.payload { &self.payload } else { &[] },
            }
        }
    }

    prop_compose! {
        fn any_parts()(bth in any_bth(), reth in any_reth(), atomic_eth in any_atomic_eth(),
                       aeth in any_aeth(), orig in any::<u64>(), imm in any::<u32>(),
                       payload in proptest::collection::vec(any::<u8>(), 0..48)) -> Parts {
            Parts { bth, reth, atomic_eth, aeth, orig, imm, payload }
        }
    }

    fn any_hdrs() -> impl Strategy<Value = IpUdp> {
        (
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(v6, s, d, sp, dp)| {
                let (s, d): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                    (
                        std::net::Ipv6Addr::from(s).into(),
                        std::net::Ipv6Addr::from(d).into(),
                    )
                } else {
                    (
                        std::net::Ipv4Addr::new(s[0], s[1], s[2], s[3]).into(),
                        std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]).into(),
                    )
                };
                IpUdp::new(SocketAddr::new(s, sp), SocketAddr::new(d, dp))
            })
    }

    proptest! {
        #[test]
        fn bth_round_trips(b in any_bth()) {
            prop_assert_eq!(Bth::decode(&b.encode()).unwrap(), b);
        }

        #[test]
        fn extension_headers_round_trip(r in any_reth(), a in any_aeth(), x in any_atomic_eth(),
                                        orig in any::<u64>(), imm in any::<u32>()) {
            prop_assert_eq!(Reth::decode(&r.encode()).unwrap(), r);
            prop_assert_eq!(Aeth::decode(&a.encode()).unwrap(), a);
            prop_assert_eq!(AtomicEth::decode(&x.encode()).unwrap(), x);
            let y = AtomicAckEth { orig };
            prop_assert_eq!(AtomicAckEth::decode(&y.encode()).unwrap(), y);
            prop_assert_eq!(ImmDt::decode(&ImmDt(imm).encode()).unwrap(), ImmDt(imm));
        }

        #[test]
        fn syndrome_bytes_round_trip(v in any::<u8>()) {
            if let Ok(s) = Syndrome::from_byte(v) {
                prop_assert_eq!(s.to_byte(), v);
            }
        }

        #[test]
        fn packets_of_every_opcode_round_trip(parts in any_parts(), h in any_hdrs()) {
            let p = parts.packet();
            let mut buf = [0u8; 128];
            let n = p.encode(&h, &mut buf).unwrap();
            prop_assert_eq!(n, p.encoded_len());
            prop_assert_eq!(n % 4, 0);
            let q = Packet::decode(&h, &buf[..n]).unwrap();
            prop_assert_eq!(q, decoded(&p));
            prop_assert_eq!(Packet::decode_unverified(&buf[..n]).unwrap(), q);
            // Pad bytes are zero.
            let end = n - ICRC_LEN;
            prop_assert!(buf[end - p.pad_len()..end].iter().all(|&b| b == 0));
        }

        #[test]
        fn a_flipped_bit_fails_the_icrc(parts in any_parts(), h in any_hdrs(), bit in any::<usize>()) {
            let p = parts.packet();
            let mut buf = [0u8; 128];
            let n = p.encode(&h, &mut buf).unwrap();
            let bit = bit % (n * 8);
            prop_assume!(bit / 8 != 4);
            buf[bit / 8] ^= 1 << (bit % 8);
            let r = Packet::decode(&h, &buf[..n]);
            prop_assert!(matches!(r, Err(WireError::Icrc { .. })), "{:?}", r);
        }

        #[test]
        fn decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..96), h in any_hdrs()) {
            let _ = Packet::decode(&h, &b);
            check_canonical(&b, &h)?;
            let f = keyed(h, 3);
            if let Ok(p) = Packet::decode_framed(&f, &b) {
                prop_assert_eq!(Packet::decode_unverified_tagged(&b).map(|t| t.0), Ok(p));
            }
        }

        #[test]
        fn authenticated_packets_round_trip(parts in any_parts(), h in any_hdrs(), k in any::<u8>()) {
            let p = parts.packet();
            let f = keyed(h, k);
            let mut buf = [0u8; 160];
            let n = p.encode_framed(&f, &mut buf).unwrap();
            prop_assert_eq!(n, p.framed_len(AUTH_TAG_LEN));
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(Packet::decode_framed(&f, &buf[..n]).unwrap(), decoded(&p));
            let (q, at) = Packet::decode_unverified_tagged(&buf[..n]).unwrap();
            prop_assert_eq!(q, decoded(&p));
            prop_assert_eq!(&buf[at..at + AUTH_TAG_LEN], &key(k).tag(&buf[..at])[..]);
            prop_assert_eq!(
                Packet::decode_framed(&keyed(h, k.wrapping_add(1)), &buf[..n]),
                Err(WireError::Auth)
            );
        }

        /// Random packets that get past the opcode, version and ICRC checks.
        #[test]
        fn decoder_never_panics_on_plausible_packets(
            op in proptest::sample::select(Opcode::ALL),
            mut b in proptest::collection::vec(any::<u8>(), 16..96),
            h in any_hdrs(),
        ) {
            b[0] = op.code();
            b[1] &= 0xF0;
            let n = b.len();
            seal(&h, &mut b);
            check_canonical(&b, &h)?;
            b.truncate(n & !3);
            if b.len() >= 16 {
                seal(&h, &mut b);
                check_canonical(&b, &h)?;
            }
        }
    }

    /// Decodes `b` both ways; a packet that decodes encodes again to the same length,
    /// and that encoding decodes to the same packet.
    fn check_canonical(b: &[u8], h: &IpUdp) -> Result<(), TestCaseError> {
        let unverified = Packet::decode_unverified(b);
        if let Ok(p) = Packet::decode(h, b) {
            prop_assert_eq!(Ok(p), unverified);
        }
        if let Ok(p) = unverified {
            let mut buf = [0u8; 128];
            let n = p.encode(h, &mut buf).unwrap();
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(Packet::decode(h, &buf[..n]).unwrap(), p);
        }
        Ok(())
    }
}
