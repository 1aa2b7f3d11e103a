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

mod packet;

pub use packet::{Framing, Packet, PacketKey};

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

#[cfg(test)]
mod tests;
