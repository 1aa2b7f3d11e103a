//! The invariant CRC (ICRC) that ends every RoCEv2 packet.
//!
//! The ICRC is Ethernet's CRC-32 (polynomial `0x04C11DB7`, reflected, initial value
//! and final XOR all ones) over the fields of a packet that no switch or router may
//! change on the way. In RoCEv2 it covers, in this order:
//!
//! ```text
//! 8 bytes of ones         stand-in for the InfiniBand LRH, which RoCEv2 does not carry
//! IPv4 header (20 bytes)  or IPv6 header (40 bytes), variant fields set to ones
//! UDP header (8 bytes)    checksum set to ones
//! BTH (12 bytes)          byte 4 (FECN, BECN, 6 reserved bits) set to ones
//! extension headers, payload and pad bytes, as sent
//! ```
//!
//! and goes on the wire after the pad, least significant byte first (as Ethernet's
//! FCS: the value that [`icrc`] returns, in [`u32::to_le_bytes`] order).
//!
//! # Masked fields, and why
//!
//! | header | field | masked | why |
//! | --- | --- | --- | --- |
//! | IPv4 | type of service (DSCP and ECN) | yes | routers re-mark DSCP and set ECN (congestion) |
//! | IPv4 | time to live | yes | decremented at every hop |
//! | IPv4 | header checksum | yes | changes with TTL and TOS |
//! | IPv6 | traffic class (DSCP and ECN) | yes | as IPv4's TOS |
//! | IPv6 | flow label | yes | may be rewritten in transit; Linux also picks it itself (auto flow labels) |
//! | IPv6 | hop limit | yes | decremented at every hop |
//! | UDP | checksum | yes | optional (zero) for IPv4, and filled in by the kernel after us |
//! | BTH | FECN, BECN, reserved 6 bits (byte 4) | yes | switches mark congestion there; what was `Resv8a` in InfiniBand |
//!
//! Everything else is covered. These are the values we assume for the fields that the
//! kernel writes and that our process never sees:
//!
//! | header | field | value | why it holds |
//! | --- | --- | --- | --- |
//! | IPv4 | version, header length | 4, 5 words | the kernel adds no IP options to a UDP socket that did not set `IP_OPTIONS` |
//! | IPv4 | total length | 20 + 8 + UDP payload | follows from the datagram |
//! | IPv4 | identification | 0 ([`IpUdp::new`]); `k` for the `k`-th datagram of a GSO train | Linux writes 0 into a datagram with DF set from an *unconnected* socket whose path-MTU mode is `IP_PMTUDISC_DO` (`ip_select_ident_segs`), and numbers on from there the datagrams it cuts from one `UDP_SEGMENT` send; a connected socket gets a per-socket counter and the default mode (`IP_PMTUDISC_WANT`) a hashed random value, which the receiver cannot know |
//! | IPv4 | flags, fragment offset | DF, 0 ([`IPV4_DF`]) | `IP_PMTUDISC_DO` sets DF on every datagram and never fragments one: a datagram larger than the path MTU fails in `sendmsg` with `EMSGSIZE` |
//! | IPv4 | protocol | 17 (UDP) | |
//! | IPv6 | payload length | 8 + UDP payload | follows from the datagram; no extension headers (the kernel adds none unless asked) |
//! | IPv6 | next header | 17 (UDP) | no extension headers |
//! | IPv4/6 | source, destination address | from the socket | the sender knows both (its bound address, or the route's source for a wildcard bind); the receiver gets the source from `recvmsg` and the destination from `IP_PKTINFO`/`IPV6_PKTINFO` |
//! | UDP | ports, length | from the socket | as the addresses; length = 8 + UDP payload |
//!
//! So the socket driver above this module must send from an unconnected UDP socket
//! with `IP_MTU_DISCOVER = IP_PMTUDISC_DO` (for IPv4), and a receiver must know the
//! address its datagram was sent to. The sender of a GSO train adds each datagram's
//! identification to its ICRC ([`ipv4_id_mask`]: the CRC is linear), and the receiver,
//! which cannot see the identification, accepts any below [`GSO_MAX_SEGMENTS`]
//! ([`ipv4_id_of`]). (Checked on Linux 6.18 by capturing loopback
//! traffic: unconnected with `IP_PMTUDISC_DO` or `IP_PMTUDISC_PROBE` gives
//! identification 0 and DF; the default mode gives hashed identifications, a
//! connected socket a counter; packets from this module sent the first way pass
//! `ci/icrc_check.py` on the capture, the second way all fail.) Safety of these assumptions: a wrong guess can
//! only make a good packet fail its ICRC, never make a corrupted one pass, because
//! the receiver computes the CRC over the header it assumes and a corrupted packet
//! still disagrees with it; and a wrong guess shows up at once, since then *every*
//! packet fails (the CI capture check, `ci/icrc_check.py`, recomputes the ICRC from
//! the real headers on the wire). The one field a peer may choose freely is the IPv4
//! identification: a RoCEv2 peer that is not this implementation (Linux rxe picks a
//! hashed identification, hardware varies) can only be checked by a receiver that
//! sees its IP header (a raw or packet socket), so such a peer's packets fail
//! [`super::wire::Packet::decode`]; [`IpUdp::ipv4_id`] is a field for that reason, and
//! for checking captures.
//!
//! The masked fields are those of the RoCEv2 annex (A17) of the InfiniBand
//! Architecture Specification, Vol. 1; the 64 leading one-bits stand for the LRH that
//! InfiniBand's own ICRC starts with and that a RoCEv2 packet does not have. Linux's
//! rxe driver computes the same.

use std::net::{IpAddr, SocketAddr};

use super::wire::{WireError, BTH_LEN};

/// Size of the ICRC at the end of every packet.
pub const ICRC_LEN: usize = 4;
/// The IPv4 flags and fragment offset field of our datagrams: Don't Fragment, offset 0.
pub const IPV4_DF: u16 = 0x4000;
/// Size of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Size of an IPv6 header without extension headers.
pub const IPV6_HEADER_LEN: usize = 40;
/// Size of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Largest UDP payload (RoCEv2 packet) over IPv4: the total length is 16 bits.
pub const MAX_IPV4_PAYLOAD: usize = 0xFFFF - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// Largest UDP payload over IPv6 without jumbograms: the payload length is 16 bits.
pub const MAX_IPV6_PAYLOAD: usize = 0xFFFF - UDP_HEADER_LEN;

/// Byte 4 of the BTH (FECN, BECN, reserved), masked to ones.
const BTH_MASKED_BYTE: usize = 4;
/// The masked LRH: 64 one-bits.
const MASKED_LRH: [u8; 8] = [0xFF; 8];
/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// What the ICRC needs of the IP and UDP headers that the kernel puts in front of a
/// datagram: the two socket addresses and, for IPv4, the two fields that are covered
/// but chosen by the sender's kernel (see the [module docs](self)).
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports an
/// IPv4 peer) stand for the IPv4 address: the packet went over IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpUdp {
    /// Sender's address and UDP port.
    pub src: SocketAddr,
    /// Receiver's address and UDP port.
    pub dst: SocketAddr,
    /// IPv4 identification (ignored for IPv6); 0 for our datagrams.
    pub ipv4_id: u16,
    /// IPv4 flags and fragment offset (ignored for IPv6); [`IPV4_DF`] for our datagrams.
    pub ipv4_flags_frag: u16,
}

impl IpUdp {
    /// The headers of a datagram sent by this implementation from `src` to `dst`:
    /// IPv4 identification 0 and DF set (unconnected socket, `IP_PMTUDISC_DO`).
    pub const fn new(src: SocketAddr, dst: SocketAddr) -> IpUdp {
        IpUdp {
            src,
            dst,
            ipv4_id: 0,
            ipv4_flags_frag: IPV4_DF,
        }
    }

    /// The headers of a datagram going the other way: source and destination swapped.
    pub const fn reversed(&self) -> IpUdp {
        IpUdp {
            src: self.dst,
            dst: self.src,
            ipv4_id: self.ipv4_id,
            ipv4_flags_frag: self.ipv4_flags_frag,
        }
    }

    /// Largest UDP payload these headers can carry (IPv4 or IPv6 length field).
    pub fn max_payload(&self) -> usize {
        match self.src.ip().to_canonical() {
            IpAddr::V4(_) => MAX_IPV4_PAYLOAD,
            IpAddr::V6(_) => MAX_IPV6_PAYLOAD,
        }
    }
}

/// Computes the ICRC of a RoCEv2 packet.
///
/// `packet` is the UDP payload without its last four bytes (the ICRC itself): the BTH,
/// the extension headers, the payload and the pad. `hdrs` rebuilds the IP and UDP
/// headers in front of it; their length fields count the ICRC too.
///
/// Fails when `packet` is shorter than a BTH, when the addresses are of different
/// families, or when the datagram would not fit the IP length field.
pub fn icrc(hdrs: &IpUdp, packet: &[u8]) -> Result<u32, WireError> {
    let Some((bth, rest)) = packet.split_first_chunk::<BTH_LEN>() else {
        return Err(WireError::Truncated {
            what: "BTH",
            need: BTH_LEN,
            have: packet.len(),
        });
    };
    let payload_len = packet.len() + ICRC_LEN;
    if payload_len > hdrs.max_payload() {
        return Err(WireError::Malformed("longer than an IP datagram can carry"));
    }
    // Fits: at most 0xFFFF (checked above).
    let udp_len = (UDP_HEADER_LEN + payload_len) as u16;

    let mut h = crc32fast::Hasher::new();
    h.update(&MASKED_LRH);
    match (hdrs.src.ip().to_canonical(), hdrs.dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = udp_len + IPV4_HEADER_LEN as u16;
            let mut ip = [0u8; IPV4_HEADER_LEN];
            ip[0] = 0x45; // version 4, 5 words
            ip[1] = 0xFF; // TOS: masked
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&hdrs.ipv4_id.to_be_bytes());
            ip[6..8].copy_from_slice(&hdrs.ipv4_flags_frag.to_be_bytes());
            ip[8] = 0xFF; // TTL: masked
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0xFF, 0xFF]); // header checksum: masked
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            h.update(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = [0u8; IPV6_HEADER_LEN];
            // Version 6, then traffic class (8 bits) and flow label (20 bits): masked.
            ip[0..4].copy_from_slice(&[0x6F, 0xFF, 0xFF, 0xFF]);
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes()); // payload length
            ip[6] = IPPROTO_UDP; // next header
            ip[7] = 0xFF; // hop limit: masked
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            h.update(&ip);
        }
        _ => {
            return Err(WireError::Malformed(
                "source and destination addresses of different IP families",
            ))
        }
    }
    let mut udp = [0u8; UDP_HEADER_LEN];
    udp[0..2].copy_from_slice(&hdrs.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&hdrs.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0xFF, 0xFF]); // checksum: masked
    h.update(&udp);

    let mut bth = *bth;
    bth[BTH_MASKED_BYTE] = 0xFF;
    h.update(&bth);
    h.update(rest);
    Ok(h.finalize())
}

/// Most segments the socket driver puts into one UDP GSO send, and so the
/// identifications (0 to this minus one) a receiver accepts; see [`ipv4_id_mask`].
pub const GSO_MAX_SEGMENTS: usize = 64;

/// CRC-32's polynomial, bit-reflected.
const POLY: u32 = 0xEDB8_8320;

/// `a * b` modulo the CRC polynomial, both in the reflected representation
/// (bit 31 is the coefficient of x^0).
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(8n) modulo the polynomial: what running a CRC register over `n` zero bytes
/// multiplies it by.
fn x_pow_8n(mut n: u64) -> u32 {
    // x^(2^k) for k = 3, 4, ...: squared as we go.
    let mut sq = mul_mod_p(1 << 30, 1 << 30); // x^2
    sq = mul_mod_p(sq, sq); // x^4
    sq = mul_mod_p(sq, sq); // x^8
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(sq, p);
        }
        sq = mul_mod_p(sq, sq);
        n >>= 1;
    }
    p
}

/// The CRC register, started at zero, after the two bytes of an IPv4
/// identification `id` (big-endian, as on the wire).
fn raw_crc_of_id(id: u16) -> u32 {
    let mut reg = 0u32;
    for byte in id.to_be_bytes() {
        reg ^= u32::from(byte);
        for _ in 0..8 {
            reg = if reg & 1 != 0 {
                (reg >> 1) ^ POLY
            } else {
                reg >> 1
            };
        }
    }
    reg
}

/// Bytes that the ICRC covers after the IPv4 identification, for a packet whose
/// BTH, extension headers, payload and pad (no ICRC) are `body_len` bytes: the rest
/// of the IPv4 header (6 + 8), the UDP header (8) and the body.
fn bytes_after_id(body_len: usize) -> u64 {
    (IPV4_HEADER_LEN - 6 + UDP_HEADER_LEN + body_len) as u64
}

/// What each of the low identification bits adds to the ICRC of a packet of a
/// given length; remembered for the last few lengths per thread (a bulk transfer
/// sends and receives packets of one or two lengths).
fn id_basis(body_len: usize) -> [u32; 6] {
    const BITS: usize = GSO_MAX_SEGMENTS.trailing_zeros() as usize;
    const _: () = assert!(BITS == 6 && GSO_MAX_SEGMENTS.is_power_of_two());
    thread_local! {
        static CACHE: std::cell::Cell<[(usize, [u32; 6]); 4]> =
            const { std::cell::Cell::new([(usize::MAX, [0; 6]); 4]) };
    }
    CACHE.with(|c| {
        let mut entries = c.get();
        if let Some(e) = entries.iter().find(|e| e.0 == body_len) {
            return e.1;
        }
        let shift = x_pow_8n(bytes_after_id(body_len));
        let basis: [u32; 6] = std::array::from_fn(|b| mul_mod_p(shift, raw_crc_of_id(1 << b)));
        entries.rotate_right(1);
        entries[0] = (body_len, basis);
        c.set(entries);
        basis
    })
}

/// What to XOR into the ICRC of an IPv4 packet computed with identification 0
/// to get its ICRC with identification `id` (`id < GSO_MAX_SEGMENTS`); `body_len`
/// is the packet's length without the ICRC.
///
/// The ICRC is linear in the bytes it covers, so the identification's share can
/// be added afterwards. This is what UDP segmentation offload needs: the kernel
/// splits one send of `n` equal packets into datagrams with identifications 0 to
/// `n - 1` (an unconnected socket with DF set starts at 0), so the `i`-th packet
/// of a GSO send must carry the ICRC for identification `i`.
///
/// # Panics
/// If `id` is not below [`GSO_MAX_SEGMENTS`].
pub fn ipv4_id_mask(body_len: usize, id: u16) -> u32 {
    assert!(usize::from(id) < GSO_MAX_SEGMENTS, "identification {id}");
    let basis = id_basis(body_len);
    let mut m = 0;
    for (b, v) in basis.iter().enumerate() {
        if id & (1 << b) != 0 {
            m ^= v;
        }
    }
    m
}

/// The identification below [`GSO_MAX_SEGMENTS`], if any, that explains the
/// difference `syndrome` between an IPv4 packet's carried ICRC and the one
/// computed for identification 0 (`body_len` as for [`ipv4_id_mask`]).
///
/// A receiver cannot see the identification of a datagram; a packet of a GSO
/// send carries its index there. Accepting these 64 values leaves 26 of the
/// ICRC's 32 bits to detect corruption.
pub fn ipv4_id_of(body_len: usize, syndrome: u32) -> Option<u16> {
    if syndrome == 0 {
        return Some(0);
    }
    let basis = id_basis(body_len);
    // Gray code: one basis vector changes per step.
    let mut v = 0u32;
    for g in 1..GSO_MAX_SEGMENTS as u16 {
        v ^= basis[g.trailing_zeros() as usize];
        if v == syndrome {
            return Some(g ^ (g >> 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Ethernet's CRC-32, one bit at a time, straight from its definition: the
    /// reflected polynomial 0xEDB88320, initial value and final XOR all ones.
    /// Deliberately naive: an independent check of the table/SIMD code we use.
    pub(crate) fn naive_crc32(chunks: &[&[u8]]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for chunk in chunks {
            for &byte in *chunk {
                for bit in 0..8 {
                    let feedback = (crc ^ u32::from(byte >> bit)) & 1;
                    crc >>= 1;
                    if feedback == 1 {
                        crc ^= 0xEDB8_8320;
                    }
                }
            }
        }
        !crc
    }

    #[test]
    fn naive_crc_is_crc32() {
        // The check value of CRC-32 (ISO-HDLC) over "123456789".
        assert_eq!(naive_crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        // The LRH seed as the Linux rxe driver keeps it: the (non-inverted) register
        // after 64 one-bits starting from all ones.
        assert_eq!(!naive_crc32(&[&MASKED_LRH]), 0xDEBB_20E3);
    }

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::from(a).into(), port)
    }

    /// A third-party known answer: an RC RDMA WRITE ONLY of 16 bytes (RETH va 0x1230,
    /// rkey 0, length 16; BTH P_Key 0xFFFF, QP 2, PSN 0) from 192.168.2.1:500 to
    /// 192.168.2.2:4791, IPv4 identification 1, no DF, TTL 64, as published in the test
    /// data of a public RoCE project as a driver capture. We checked it independently
    /// with Python's zlib.crc32 over the masked pseudo-packet.
    #[test]
    fn third_party_capture_known_answer() {
        let ip = "4500004c000100004011f54cc0a80201c0a80202";
        let udp = "01f412b70038ffa6";
        let roce = concat!(
            "0a00ffff0000000200000000",
            "00000000000012300000000000000010",
            "000102030405060708090a0b0c0d0e0f",
        );
        let icrc_bytes = [0xca, 0x47, 0x47, 0x0e];
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(hex(ip).len(), 20);
        assert_eq!(hex(udp).len(), 8);
        let hdrs = IpUdp {
            src: v4([192, 168, 2, 1], 500),
            dst: v4([192, 168, 2, 2], 4791),
            ipv4_id: 1,
            ipv4_flags_frag: 0,
        };
        let c = icrc(&hdrs, &hex(roce)).unwrap();
        assert_eq!(c.to_le_bytes(), icrc_bytes);
        // And the same from the naive CRC over the masked real headers.
        let mut ip = hex(ip);
        ip[1] = 0xFF;
        ip[8] = 0xFF;
        ip[10] = 0xFF;
        ip[11] = 0xFF;
        let mut udp = hex(udp);
        udp[6] = 0xFF;
        udp[7] = 0xFF;
        let mut roce = hex(roce);
        roce[4] = 0xFF;
        assert_eq!(naive_crc32(&[&MASKED_LRH, &ip, &udp, &roce]), c);
    }

    /// The IPv4 header that Linux writes in front of our datagrams: no options,
    /// TOS 0, identification 0, DF, TTL 64, with its real checksum.
    fn kernel_ipv4_header(src: [u8; 4], dst: [u8; 4], udp_len: usize) -> [u8; 20] {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let sum = internet_checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip
    }

    /// The IPv6 header Linux writes: traffic class 0, an automatic flow label, hop limit 64.
    fn kernel_ipv6_header(src: [u8; 16], dst: [u8; 16], udp_len: usize) -> [u8; 40] {
        let mut ip = [0u8; 40];
        ip[0..4].copy_from_slice(&[0x60, 0x0B, 0xEE, 0xF1]);
        ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        ip[6] = 17;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        ip
    }

    fn internet_checksum(chunks: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = chunks.concat();
        let mut sum = 0u32;
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&b| u32::from(b));
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// The UDP header with a real checksum over the IP pseudo-header.
    fn udp_header(ip: &[u8], sport: u16, dport: u16, payload: &[u8]) -> [u8; 8] {
        let len = (8 + payload.len()) as u16;
        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&dport.to_be_bytes());
        udp[4..6].copy_from_slice(&len.to_be_bytes());
        let pseudo: Vec<u8> = if ip[0] >> 4 == 4 {
            [&ip[12..20], &[0, 17], &len.to_be_bytes()[..]].concat()
        } else {
            [&ip[8..40], &[0, 0], &len.to_be_bytes()[..], &[0, 0, 0, 17]].concat()
        };
        let sum = internet_checksum(&[&pseudo, &udp, payload]);
        udp[6..8].copy_from_slice(&if sum == 0 { 0xFFFF } else { sum }.to_be_bytes());
        udp
    }

    /// The ICRC from its definition, over real headers: masks the variant fields of
    /// copies of them (independently of `icrc`) and runs the bit-by-bit CRC.
    fn naive_icrc(ip: &[u8], udp: &[u8], roce_without_icrc: &[u8]) -> u32 {
        let mut ip = ip.to_vec();
        if ip[0] >> 4 == 4 {
            ip[1] = 0xFF; // TOS
            ip[8] = 0xFF; // TTL
            ip[10] = 0xFF; // header checksum
            ip[11] = 0xFF;
        } else {
            ip[0] |= 0x0F; // traffic class
            ip[1] = 0xFF; // traffic class, flow label
            ip[2] = 0xFF; // flow label
            ip[3] = 0xFF;
            ip[7] = 0xFF; // hop limit
        }
        let mut udp = udp.to_vec();
        udp[6] = 0xFF; // checksum
        udp[7] = 0xFF;
        let mut roce = roce_without_icrc.to_vec();
        roce[4] = 0xFF; // FECN, BECN, resv6
        naive_crc32(&[&[0xFF; 8], &ip, &udp, &roce])
    }

    /// Packets of every opcode as our encoder writes them, in the IP/UDP headers
    /// the kernel would put in front of them. Returns (IP header, UDP header, UDP payload).
    fn kernel_datagrams(v6: bool) -> Vec<(Vec<u8>, [u8; 8], Vec<u8>)> {
        use super::super::wire::*;
        let (sport, dport) = (50123, 4791);
        let s4 = [198, 18, 0, 1];
        let d4 = [198, 18, 0, 2];
        let s6: [u8; 16] = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        let d6: [u8; 16] = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let hdrs = if v6 {
            IpUdp::new(
                SocketAddr::new(Ipv6Addr::from(s6).into(), sport),
                SocketAddr::new(Ipv6Addr::from(d6).into(), dport),
            )
        } else {
            IpUdp::new(v4(s4, sport), v4(d4, dport))
        };
        let payload: Vec<u8> = (0..37u8).collect();
        let mut out = Vec::new();
        for (i, &op) in Opcode::ALL.iter().enumerate() {
            let l = op.layout();
            let mut p = Packet::new(Bth::new(op, Qpn::new(0x1234).unwrap(), Psn::new(i as u32)));
            p.bth.becn = i % 3 == 0;
            p.reth = l.reth.then_some(Reth {
                va: 0x1000,
                rkey: 7,
                dma_len: 37,
            });
            p.atomic_eth = l.atomic_eth.then_some(AtomicEth {
                va: 0x2000,
                rkey: 8,
                swap_add: 1,
                compare: 2,
            });
            p.aeth = l.aeth.then_some(Aeth {
                syndrome: Syndrome::Ack {
                    credits: Syndrome::NO_CREDITS,
                },
                msn: Msn::new(5),
            });
            p.atomic_ack_eth = l.atomic_ack_eth.then_some(AtomicAckEth { orig: 9 });
            p.imm = l.immdt.then_some(ImmDt(0xABCD));
            if l.payload {
                p.payload = &payload[..i];
            }
            let mut buf = vec![0u8; p.encoded_len()];
            p.encode(&hdrs, &mut buf).unwrap();
            let udp_len = 8 + buf.len();
            let ip = if v6 {
                kernel_ipv6_header(s6, d6, udp_len).to_vec()
            } else {
                kernel_ipv4_header(s4, d4, udp_len).to_vec()
            };
            let udp = udp_header(&ip, sport, dport, &buf);
            out.push((ip, udp, buf));
        }
        out
    }

    #[test]
    fn encoder_agrees_with_a_naive_crc_over_kernel_headers() {
        for v6 in [false, true] {
            for (ip, udp, roce) in kernel_datagrams(v6) {
                let n = roce.len() - ICRC_LEN;
                let carried = u32::from_le_bytes(roce[n..].try_into().unwrap());
                assert_eq!(
                    naive_icrc(&ip, &udp, &roce[..n]),
                    carried,
                    "v6 {v6}: {roce:02x?}"
                );
            }
        }
    }

    /// A classic pcap file (microseconds, little-endian) of Ethernet frames.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut f = Vec::new();
        for w in [0xA1B2_C3D4u32, 0x0004_0002, 0, 0, 65535, 1] {
            if w == 0x0004_0002 {
                f.extend_from_slice(&2u16.to_le_bytes());
                f.extend_from_slice(&4u16.to_le_bytes());
            } else {
                f.extend_from_slice(&w.to_le_bytes());
            }
        }
        for (i, fr) in frames.iter().enumerate() {
            for w in [
                1_700_000_000 + i as u32,
                0,
                fr.len() as u32,
                fr.len() as u32,
            ] {
                f.extend_from_slice(&w.to_le_bytes());
            }
            f.extend_from_slice(fr);
        }
        f
    }

    /// A pcapng file (what tshark writes by default) of Ethernet frames.
    fn pcapng(frames: &[Vec<u8>]) -> Vec<u8> {
        fn block(f: &mut Vec<u8>, kind: u32, body: &[u8]) {
            let len = 12 + body.len().next_multiple_of(4);
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&(len as u32).to_le_bytes());
            f.extend_from_slice(body);
            f.resize(f.len() + (len - 12 - body.len()), 0);
            f.extend_from_slice(&(len as u32).to_le_bytes());
        }
        let mut f = Vec::new();
        let shb = [&0x1A2B_3C4Du32.to_le_bytes()[..], &[1, 0, 0, 0], &[0xFF; 8]].concat();
        block(&mut f, 0x0A0D_0D0A, &shb);
        block(&mut f, 1, &[1, 0, 0, 0, 0, 0, 0, 0]);
        for fr in frames {
            let len = (fr.len() as u32).to_le_bytes();
            let epb = [&[0u8; 12][..], &len, &len, fr].concat();
            block(&mut f, 6, &epb);
        }
        f
    }

    fn ethernet(ip: &[u8], udp: &[u8], payload: &[u8]) -> Vec<u8> {
        let ethertype: &[u8] = if ip[0] >> 4 == 4 {
            &[0x08, 0x00]
        } else {
            &[0x86, 0xDD]
        };
        let macs = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        let mut fr = [&macs[..], ethertype, ip, udp, payload].concat();
        fr.resize(fr.len().max(60), 0); // Ethernet's minimum frame, as on a veth
        fr
    }

    /// Runs `ci/icrc_check.py` on `capture`; returns its exit code and output, or
    /// `None` when there is no python3.
    fn run_check(name: &str, capture: &[u8]) -> Option<(i32, String)> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/icrc_check.py");
        let path = std::env::temp_dir().join(format!("dos-icrc-{}-{name}", std::process::id()));
        std::fs::write(&path, capture).unwrap();
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(&path)
            .arg("4791")
            .output();
        std::fs::remove_file(&path).unwrap();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("running python3: {e}"),
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                Some((o.status.code().unwrap_or(-1), text))
            }
        }
    }

    #[test]
    fn icrc_check_script_agrees_on_a_capture() {
        let mut frames: Vec<Vec<u8>> = [false, true]
            .into_iter()
            .flat_map(kernel_datagrams)
            .map(|(ip, udp, roce)| ethernet(&ip, &udp, &roce))
            .collect();
        let n = frames.len();
        // Traffic to another port is not RoCE: ignored.
        let ip = kernel_ipv4_header([198, 18, 0, 1], [198, 18, 0, 2], 8 + 4);
        frames.push(ethernet(&ip, &udp_header(&ip, 4791, 53, b"junk"), b"junk"));

        let Some((code, out)) = run_check("good.pcap", &pcap(&frames)) else {
            eprintln!("SKIPPED icrc_check_script_agrees_on_a_capture: python3 not found");
            return;
        };
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{n} RoCEv2 packets checked, 0 bad")),
            "{out}"
        );
        let (code, out) = run_check("good.pcapng", &pcapng(&frames)).unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{n} RoCEv2 packets checked, 0 bad")),
            "{out}"
        );

        // One payload bit flipped in one packet, and a masked field changed in
        // another (TTL decremented by a router): only the first is bad.
        let mut bad = frames.clone();
        let last = bad[3].len() - 6; // in the payload
        bad[3][last] ^= 0x10;
        bad[5][14 + 8] = 63;
        let (code, out) = run_check("bad.pcap", &pcap(&bad)).unwrap();
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("1 bad"), "{out}");
        assert!(out.contains("frame 4:"), "{out}");

        // Nothing to check is a failure too (a capture that missed the traffic).
        let (code, out) = run_check("empty.pcap", &pcap(&frames[n..])).unwrap();
        assert_eq!(code, 1, "{out}");
        let (code, _) = run_check("garbage.pcap", b"not a capture").unwrap();
        assert_eq!(code, 2);
    }

    #[test]
    fn masked_bth_byte_does_not_change_the_icrc() {
        let hdrs = IpUdp::new(v4([10, 0, 0, 1], 49152), v4([10, 0, 0, 2], 4791));
        let mut p = [0u8; 16];
        p[0] = 0x04;
        let a = icrc(&hdrs, &p).unwrap();
        p[4] = 0xC0 | 0x15;
        assert_eq!(icrc(&hdrs, &p).unwrap(), a);
        p[5] = 1;
        assert_ne!(icrc(&hdrs, &p).unwrap(), a);
    }

    #[test]
    fn every_covered_header_field_changes_the_icrc() {
        let base = IpUdp::new(v4([10, 0, 0, 1], 49152), v4([10, 0, 0, 2], 4791));
        let p = [0x04, 0, 0xFF, 0xFF, 0, 0, 0, 1, 0x80, 0, 0, 7];
        let c = icrc(&base, &p).unwrap();
        let variants = [
            IpUdp {
                src: v4([10, 0, 0, 3], 49152),
                ..base
            },
            IpUdp {
                dst: v4([10, 0, 0, 3], 4791),
                ..base
            },
            IpUdp {
                src: v4([10, 0, 0, 1], 49153),
                ..base
            },
            IpUdp {
                dst: v4([10, 0, 0, 2], 4792),
                ..base
            },
            IpUdp { ipv4_id: 1, ..base },
            IpUdp {
                ipv4_flags_frag: 0,
                ..base
            },
        ];
        for v in variants {
            assert_ne!(icrc(&v, &p).unwrap(), c, "{v:?}");
        }
        // Length is covered through the IP and UDP length fields and the bytes.
        assert_ne!(icrc(&base, &[&p[..], &[0; 4]].concat()).unwrap(), c);
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_families_must_agree() {
        let p = [0u8; 12];
        let a = v4([127, 0, 0, 1], 1000);
        let b = v4([127, 0, 0, 2], 4791);
        let mapped = |s: SocketAddr| match s.ip() {
            IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), s.port()),
            IpAddr::V6(_) => s,
        };
        assert_eq!(
            icrc(&IpUdp::new(mapped(a), mapped(b)), &p).unwrap(),
            icrc(&IpUdp::new(a, b), &p).unwrap()
        );
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 4791);
        assert!(matches!(
            icrc(&IpUdp::new(a, v6), &p),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            icrc(&IpUdp::new(a, b), &p[..11]),
            Err(WireError::Truncated { .. })
        ));
        let big = vec![0u8; MAX_IPV4_PAYLOAD - ICRC_LEN + 1];
        assert!(icrc(&IpUdp::new(a, b), &big).is_err());
        assert!(icrc(&IpUdp::new(a, b), &big[1..]).is_ok());
        let v6a = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 1000);
        assert!(icrc(&IpUdp::new(v6a, v6), &big).is_ok());
    }

    #[test]
    fn identification_masks_agree_with_the_crc() {
        let a = v4([198, 18, 0, 1], 49152);
        let b = v4([198, 18, 0, 2], 4791);
        for len in [12usize, 16, 28, 1040, 4108, 4124, 32800] {
            let p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let zero = icrc(&IpUdp::new(a, b), &p).unwrap();
            let with_id = |ipv4_id| {
                let h = IpUdp {
                    ipv4_id,
                    ..IpUdp::new(a, b)
                };
                icrc(&h, &p).unwrap()
            };
            for id in 0..GSO_MAX_SEGMENTS as u16 {
                let real = with_id(id);
                assert_eq!(zero ^ ipv4_id_mask(len, id), real, "len {len} id {id}");
                assert_eq!(ipv4_id_of(len, real ^ zero), Some(id), "len {len} id {id}");
            }
            // Identifications from 64 on are not explained.
            for id in [64u16, 65, 100, 0x8000, 0xFFFF] {
                let real = with_id(id);
                assert_eq!(ipv4_id_of(len, real ^ zero), None, "len {len} id {id}");
            }
            // Nor is a flipped payload bit.
            let mut q = p.clone();
            q[len - 1] ^= 1;
            let bad = icrc(&IpUdp::new(a, b), &q).unwrap();
            assert_eq!(ipv4_id_of(len, bad ^ zero), None);
        }
    }

    #[test]
    fn the_field_algebra_is_right() {
        // x^8 times x^8 is x^16; x^(8n) composes.
        assert_eq!(mul_mod_p(x_pow_8n(1), x_pow_8n(1)), x_pow_8n(2));
        assert_eq!(mul_mod_p(x_pow_8n(3), x_pow_8n(5)), x_pow_8n(8));
        assert_eq!(x_pow_8n(0), 1 << 31);
    }
}
