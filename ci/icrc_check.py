#!/usr/bin/env python3
"""Check the RoCEv2 ICRC of every UDP datagram to some ports in a capture.

usage: icrc_check.py CAPTURE [PORTS] [--min-packets N] [-v]

CAPTURE is a pcap or pcapng file (as tcpdump or tshark write them); PORTS the UDP
destination ports of RoCEv2 traffic: a comma-separated list of ports and ranges
(default 4791, e.g. "4791,50000-50063"). Every UDP datagram to one of them, over
IPv4 or IPv6, has its ICRC recomputed from the IP and UDP headers actually in the
capture, independently of the Rust code (zlib.crc32), and compared with the last four
bytes of its payload.

The ICRC is CRC-32 (as Ethernet's) over: 8 bytes of 0xff (the masked LRH), the IP
header with its variant fields set to ones (IPv4: type of service, TTL, header
checksum; IPv6: traffic class, flow label, hop limit), the UDP header with its
checksum set to ones, the BTH with its byte 4 (FECN, BECN, reserved) set to ones, and
the rest of the UDP payload up to the ICRC; it is sent least significant byte first.

Exit status: 0 if every checked packet is good and at least --min-packets (default
1) were checked; 1 if a packet is bad (or cannot be checked: IPv4 options, fragments,
truncated capture) or too few were checked; 2 if the capture cannot be read.
Python 3 standard library only.
"""

import argparse
import ipaddress
import struct
import sys
import zlib

# Link-layer types we understand (pcap LINKTYPE_* values).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
IPPROTO_UDP = 17

BTH_LEN = 12
ICRC_LEN = 4
MASKED_LRH = b"\xff" * 8


class CaptureError(Exception):
    """The capture file cannot be read."""


def read_pcap(data):
    """Yields (linktype, frame bytes, original length) from a classic pcap file."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise CaptureError("not a pcap file")
    if len(data) < 24:
        raise CaptureError("pcap global header truncated")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0xFFFF
    off = 24
    while off < len(data):
        if off + 16 > len(data):
            raise CaptureError("pcap record header truncated")
        incl, orig = struct.unpack_from(e + "II", data, off + 8)
        off += 16
        if off + incl > len(data):
            raise CaptureError("pcap record truncated")
        yield linktype, data[off:off + incl], orig
        off += incl


def read_pcapng(data):
    """Yields (linktype, frame bytes, original length) from a pcapng file."""
    off = 0
    e = "<"
    interfaces = []  # (linktype, snaplen) per interface of the current section
    while off < len(data):
        if off + 12 > len(data):
            raise CaptureError("pcapng block header truncated")
        btype_raw = data[off:off + 4]
        if btype_raw == b"\x0a\x0d\x0d\x0a":
            bom = data[off + 8:off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise CaptureError("pcapng section with a bad byte-order magic")
            interfaces = []
        btype, blen = struct.unpack_from(e + "II", data, off)
        if blen < 12 or blen % 4 != 0 or off + blen > len(data):
            raise CaptureError("pcapng block of bad length %d at offset %d" % (blen, off))
        body = data[off + 8:off + blen - 4]
        off += blen
        if btype == 0x00000001:  # Interface Description Block
            if len(body) < 8:
                raise CaptureError("pcapng interface block truncated")
            linktype, _, snaplen = struct.unpack_from(e + "HHI", body, 0)
            interfaces.append((linktype, snaplen))
        elif btype == 0x00000006:  # Enhanced Packet Block
            if len(body) < 20:
                raise CaptureError("pcapng packet block truncated")
            ifid, _, _, caplen, orig = struct.unpack_from(e + "IIIII", body, 0)
            if ifid >= len(interfaces) or 20 + caplen > len(body):
                raise CaptureError("pcapng packet block inconsistent")
            yield interfaces[ifid][0], body[20:20 + caplen], orig
        elif btype == 0x00000003:  # Simple Packet Block
            if not interfaces or len(body) < 4:
                raise CaptureError("pcapng simple packet block inconsistent")
            orig = struct.unpack_from(e + "I", body, 0)[0]
            snap = interfaces[0][1] or orig
            caplen = min(orig, snap, len(body) - 4)
            yield interfaces[0][0], body[4:4 + caplen], orig
        elif btype == 0x00000002:  # obsolete Packet Block
            if len(body) < 20:
                raise CaptureError("pcapng packet block truncated")
            ifid, _, _, _, caplen, orig = struct.unpack_from(e + "HHIIII", body, 0)
            if ifid >= len(interfaces) or 20 + caplen > len(body):
                raise CaptureError("pcapng packet block inconsistent")
            yield interfaces[ifid][0], body[20:20 + caplen], orig
        # Other blocks (name resolution, statistics, ...) carry no packets.


def read_capture(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        return read_pcapng(data)
    return read_pcap(data)


def network_layer(linktype, frame):
    """Returns (ethertype, offset of the network header), or None if not IP."""
    if linktype == LINKTYPE_ETHERNET:
        off = 12
        if len(frame) < off + 2:
            return None
        etype = struct.unpack_from("!H", frame, off)[0]
        off += 2
        while etype in VLAN_TYPES and len(frame) >= off + 4:
            etype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
        return etype, off
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        return struct.unpack_from("!H", frame, 14)[0], 16
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        return struct.unpack_from("!H", frame, 0)[0], 20
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not frame:
            return None
        version = frame[0] >> 4
        return {4: ETH_P_IP, 6: ETH_P_IPV6}.get(version, 0), 0
    raise CaptureError("unsupported link-layer type %d" % linktype)


def parse_ports(spec):
    ports = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            lo, hi = int(lo), int(hi)
            if not 0 < lo <= hi <= 0xFFFF:
                raise ValueError("bad port range %r" % part)
            ports.update(range(lo, hi + 1))
        else:
            p = int(part)
            if not 0 < p <= 0xFFFF:
                raise ValueError("bad port %r" % part)
            ports.add(p)
    if not ports:
        raise ValueError("no ports")
    return ports


def icrc(pseudo_ip, udp_header, roce):
    """The ICRC of a packet: `roce` is the UDP payload without its ICRC."""
    udp = bytearray(udp_header)
    udp[6:8] = b"\xff\xff"
    bth = bytearray(roce[:BTH_LEN])
    bth[4] = 0xFF
    crc = zlib.crc32(MASKED_LRH)
    crc = zlib.crc32(pseudo_ip, crc)
    crc = zlib.crc32(bytes(udp), crc)
    crc = zlib.crc32(bytes(bth), crc)
    crc = zlib.crc32(roce[BTH_LEN:], crc)
    return crc & 0xFFFFFFFF


class Problem(Exception):
    """A packet to a RoCE port that cannot be checked."""


def check_datagram(etype, pkt, ports):
    """Checks one IP packet; returns None if it is not RoCE traffic to `ports`,
    else (description, carried, computed)."""
    if etype == ETH_P_IP:
        if len(pkt) < 20 or pkt[0] >> 4 != 4:
            return None
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        if pkt[9] != IPPROTO_UDP:
            return None
        flags_frag = struct.unpack_from("!H", pkt, 6)[0]
        src = ipaddress.IPv4Address(pkt[12:16])
        dst = ipaddress.IPv4Address(pkt[16:20])
        if len(pkt) < ihl + 8:
            return None
        dport = struct.unpack_from("!H", pkt, ihl + 2)[0]
        if dport not in ports:
            return None
        desc = "%s -> %s:%d" % (src, dst, dport)
        if flags_frag & 0x1FFF or flags_frag & 0x2000:
            raise Problem(desc + ": IPv4 fragment, cannot check")
        if ihl != 20:
            raise Problem(desc + ": IPv4 header with options, which RoCEv2 does not use")
        if total > len(pkt):
            raise Problem(desc + ": truncated in the capture (snap length?)")
        pkt = pkt[:total]  # drop link-layer padding
        ip = bytearray(pkt[:20])
        ip[1] = 0xFF  # type of service
        ip[8] = 0xFF  # time to live
        ip[10:12] = b"\xff\xff"  # header checksum
        pseudo_ip = bytes(ip)
        udp_off = 20
    elif etype == ETH_P_IPV6:
        if len(pkt) < 40 or pkt[0] >> 4 != 6:
            return None
        if pkt[6] != IPPROTO_UDP:
            return None  # extension headers: not ours
        plen = struct.unpack_from("!H", pkt, 4)[0]
        src = ipaddress.IPv6Address(pkt[8:24])
        dst = ipaddress.IPv6Address(pkt[24:40])
        if len(pkt) < 48:
            return None
        dport = struct.unpack_from("!H", pkt, 42)[0]
        if dport not in ports:
            return None
        desc = "[%s] -> [%s]:%d" % (src, dst, dport)
        if 40 + plen > len(pkt):
            raise Problem(desc + ": truncated in the capture (snap length?)")
        pkt = pkt[:40 + plen]
        ip = bytearray(pkt[:40])
        ip[0] |= 0x0F  # traffic class, high nibble
        ip[1] = 0xFF  # traffic class low nibble, flow label high nibble
        ip[2:4] = b"\xff\xff"  # flow label
        ip[7] = 0xFF  # hop limit
        pseudo_ip = bytes(ip)
        udp_off = 40
    else:
        return None
    udp = pkt[udp_off:udp_off + 8]
    ulen = struct.unpack_from("!H", udp, 4)[0]
    if ulen != len(pkt) - udp_off:
        raise Problem(desc + ": UDP length %d disagrees with the IP length" % ulen)
    roce = pkt[udp_off + 8:]
    if len(roce) < BTH_LEN + ICRC_LEN:
        raise Problem(desc + ": %d bytes, shorter than a BTH and an ICRC" % len(roce))
    carried = struct.unpack_from("<I", roce, len(roce) - ICRC_LEN)[0]
    computed = icrc(pseudo_ip, udp, roce[:-ICRC_LEN])
    desc += " opcode 0x%02x psn %d, %d bytes" % (
        roce[0], struct.unpack_from("!I", roce, 8)[0] & 0xFFFFFF, len(roce))
    return desc, carried, computed


def main(argv):
    ap = argparse.ArgumentParser(
        description="Recompute the RoCEv2 ICRC of the UDP datagrams to PORTS in a capture.")
    ap.add_argument("capture", help="pcap or pcapng file")
    ap.add_argument("ports", nargs="?", default="4791",
                    help="UDP destination ports: list and ranges, e.g. 4791,50000-50063")
    ap.add_argument("--min-packets", type=int, default=1,
                    help="fail unless at least this many packets were checked (default 1)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every packet")
    args = ap.parse_args(argv)
    try:
        ports = parse_ports(args.ports)
    except ValueError as e:
        ap.error(str(e))

    checked = bad = 0
    try:
        for n, (linktype, frame, orig) in enumerate(read_capture(args.capture), 1):
            net = network_layer(linktype, frame)
            if net is None:
                continue
            etype, off = net
            try:
                r = check_datagram(etype, frame[off:], ports)
            except Problem as p:
                checked += 1
                bad += 1
                print("frame %d: %s" % (n, p))
                continue
            if r is None:
                continue
            desc, carried, computed = r
            checked += 1
            if carried != computed:
                bad += 1
                print("frame %d: %s: ICRC 0x%08x, expected 0x%08x" % (n, desc, carried, computed))
            elif args.verbose:
                print("frame %d: %s: ICRC 0x%08x ok" % (n, desc, carried))
    except (CaptureError, OSError) as e:
        print("icrc_check: %s: %s" % (args.capture, e), file=sys.stderr)
        return 2

    print("icrc_check: %d RoCEv2 packets checked, %d bad" % (checked, bad))
    if bad:
        return 1
    if checked < args.min_packets:
        print("icrc_check: expected at least %d packets to ports %s" % (args.min_packets, args.ports))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
