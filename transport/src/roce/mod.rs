//! Soft-RoCE backend: the RoCEv2 wire protocol over the kernel's UDP
//! sockets, for hosts without an RDMA device (and kernels without `rdma_rxe`).
//!
//! A RoCEv2 packet is an InfiniBand transport packet carried in a UDP datagram, by
//! default to destination port [`ROCE_V2_PORT`] (4791). As we carry it, the UDP
//! payload is:
//!
//! ```text
//! BTH (12) | extension headers (0 to 28) | payload | pad (0 to 3) | ICRC (4)
//! ```
//!
//! * the BTH says what the packet is (its [`wire::Opcode`]), for which queue pair, and
//!   its packet sequence number;
//! * the opcode fixes which extension headers follow (RETH for RDMA, AETH for
//!   acknowledgements, AtomicETH and AtomicAckETH for atomics, ImmDt for immediate
//!   data) and whether a payload does;
//! * the pad makes the payload a multiple of four bytes (the BTH's pad count says how
//!   much of it is pad);
//! * the ICRC is a CRC-32 over the packet and the parts of the IP and UDP headers
//!   that do not change in transit ([`icrc`]).
//!
//! Between dos endpoints (unless `DOS_ROCE_AUTH=0`) the payload of every packet ends
//! with a 16-byte authentication tag, keyed BLAKE3 with a key per queue pair and
//! direction derived from the job's secret ([`wire`]'s module docs, "Authenticated
//! packets"): the ICRC, which anyone can recompute, keeps out corruption, the tag
//! forgery. Packets still decode as RoCEv2 (the tag looks like payload), and a
//! queue pair takes datagrams only from its peer's address and port
//! ([`iface`]).
//!
//! Ethernet, IP and UDP headers are the kernel's: we send and receive UDP payloads.
//! The ICRC covers IP and UDP header fields all the same, so [`icrc::IpUdp`] rebuilds
//! them from the socket addresses; its docs list every assumed field.
//!
//! Modules:
//!
//! * [`wire`]: opcodes of the Reliable Connection transport, the headers, and
//!   [`wire::Packet`], which decodes a UDP payload into its headers and a payload
//!   slice (checking lengths, pad, version, opcode and ICRC) and encodes one into a
//!   caller's buffer. Golden-byte and property tested, decoders never panic, fuzzed
//!   (`fuzz/`, target `roce_packet`).
//! * [`icrc`]: the invariant CRC.
//! * [`engine`]: the reliability engine of one RC queue pair (PSNs, ACK/NAK,
//!   go-back-N retransmission, RNR, READ and atomic responder resources, memory
//!   regions behind the [`engine::Memory`] trait), sans-IO: `engine/mod.rs`
//!   (the queue pair, its configuration), `memory.rs`, `wr.rs` (work requests
//!   and completions), `requester.rs`, `responder.rs`. Tested in a
//!   deterministic simulated network with loss, duplication, reordering and
//!   corruption (`sim/mod.rs`, its scenarios in `sim/tests.rs`; tests only).
//! * [`udp`]: batched UDP sockets (`sendmmsg`/`recvmmsg`, GSO and GRO,
//!   `IP_PKTINFO`), the socket layer under the endpoint.
//! * [`iface`]: [`iface::RoceIface`], the transport traits over one UDP socket
//!   and one queue pair per peer; its bring-up in `connect.rs`
//!   ([`iface::PreparedRoce`]), its registered memory and RMA in `mem.rs`, and
//!   its driving (trains of datagrams, receive path, timers, the driver thread
//!   that answers peers while the owner computes) in `progress.rs`.
//!
//! ```
//! use dos_transport::roce::icrc::IpUdp;
//! use dos_transport::roce::wire::{Bth, Opcode, Packet, Psn, Qpn};
//!
//! let hdrs = IpUdp::new("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:4791".parse().unwrap());
//! let mut p = Packet::new(Bth::new(Opcode::SendOnly, Qpn::new(0x11).unwrap(), Psn::new(7)));
//! p.bth.ack_req = true;
//! p.payload = b"hello";
//! let mut buf = [0u8; 64];
//! let n = p.encode(&hdrs, &mut buf).unwrap();
//! assert_eq!(n, 12 + 5 + 3 + 4); // BTH, payload, pad, ICRC
//!
//! let q = Packet::decode(&hdrs, &buf[..n]).unwrap();
//! assert_eq!((q.bth.opcode, q.bth.psn.get(), q.payload), (Opcode::SendOnly, 7, &b"hello"[..]));
//! buf[13] ^= 1; // corrupted in transit
//! assert!(matches!(Packet::decode(&hdrs, &buf[..n]), Err(dos_transport::roce::wire::WireError::Icrc { .. })));
//! ```

mod connect;
pub mod engine;
pub mod icrc;
pub mod iface;
mod mem;
mod progress;
#[cfg(test)]
mod sim;
pub mod udp;
pub mod wire;

/// The UDP destination port of RoCEv2 (IANA-assigned).
pub const ROCE_V2_PORT: u16 = 4791;
