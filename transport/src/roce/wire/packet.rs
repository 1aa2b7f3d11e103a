//! Packet assembly: [`Packet`], which encodes a packet into a caller's buffer and
//! decodes a UDP payload into its headers and payload, and the framing of a
//! connection's direction ([`Framing`]: the headers its ICRC covers and the
//! [`PacketKey`] of its tags). The [module docs](super) describe the format.

use super::*;

/// The key that authenticates the packets of one direction of one connection:
/// keyed BLAKE3, truncated to [`AUTH_TAG_LEN`] bytes (see the [module docs](super)).
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
    /// [module docs](super)).
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
