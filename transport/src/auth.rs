//! Authentication of connections with the job's secret.
//!
//! Every job has one [`Secret`] (at least 128 random bits), made by the launcher and
//! handed to its processes through the environment ([`Secret::to_hex`],
//! [`Secret::from_hex`]). Every connection between two processes of the job, rank to
//! rank over tcp, and later agent to `dosrun` or rank to the wire-up service, starts
//! with a mutual challenge-response that proves each end knows the secret without
//! sending it:
//!
//! ```text
//! I -> R   Hello { role I, id_I, nonce_I }        both hellos go out at once
//! R -> I   Hello { role R, id_R, nonce_R }
//! I -> R   Proof { HMAC(secret, ctx, I, id_I, id_R, nonce_I, nonce_R) }
//! R -> I   Proof { HMAC(secret, ctx, R, id_R, id_I, nonce_R, nonce_I) }
//! ```
//!
//! `I` is the end that opened the connection (the initiator), `R` the one that
//! accepted it (the responder); `ctx` is a context string chosen by the protocol
//! that runs afterwards (it binds the proof to that protocol and its parameters),
//! and the nonces are 256 fresh random bits per connection, so a recorded proof is
//! worth nothing later. Each end puts its own role, id and nonce first, so a proof
//! can neither be replayed nor reflected back to its maker on another connection;
//! an end that claims our own id or our own role is rejected. Proofs are checked
//! in constant time.
//!
//! The exchange is a sans-IO state machine, [`Handshake`], driven by whatever
//! moves the bytes (the tcp backend runs many of them from one `poll` loop), and
//! [`handshake`] runs it over any blocking `Read + Write`:
//!
//! ```
//! use dos_transport::auth::{handshake, Role, Secret};
//! use std::os::unix::net::UnixStream;
//!
//! let secret = Secret::generate().unwrap();
//! // The secret travels to the other process as hex, e.g. in its environment.
//! let theirs = Secret::from_hex(&secret.to_hex()).unwrap();
//! let (mut a, mut b) = UnixStream::pair().unwrap();
//! let other = std::thread::spawn(move || handshake(&mut b, &theirs, b"example v1", Role::Responder, 7));
//! assert_eq!(handshake(&mut a, &secret, b"example v1", Role::Initiator, 3).unwrap(), 7);
//! assert_eq!(other.join().unwrap().unwrap(), 3);
//! ```
//!
//! Authentication is all this gives: the traffic that follows is neither encrypted
//! nor integrity-protected (the job's network is trusted not to tamper, but not
//! trusted to be free of strangers that connect).
//!
//! ## Wire format (version 1, little-endian)
//!
//! ```text
//! Hello, 48 bytes:  0..4 "dosH" | 4 version=1 | 5 role (1 initiator, 2 responder)
//!                   | 6..8 zero | 8..16 id u64 | 16..48 nonce
//! Proof, 40 bytes:  0..4 "dosP" | 4 version=1 | 5..8 zero | 8..40 HMAC-SHA256 tag
//! MAC input:        "dos-auth-v1\0" | context length u32 | context | prover role u8
//!                   | prover id u64 | verifier id u64 | prover nonce | verifier nonce
//! ```

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Magic of a hello message.
pub const HELLO_MAGIC: [u8; 4] = *b"dosH";
/// Magic of a proof message.
pub const PROOF_MAGIC: [u8; 4] = *b"dosP";
/// Version of the handshake; bump on any change of the messages or the MAC input.
pub const VERSION: u8 = 1;
/// Length of a hello message.
pub const HELLO_LEN: usize = 48;
/// Length of a proof message.
pub const PROOF_LEN: usize = 40;
/// Length of a nonce.
pub const NONCE_LEN: usize = 32;
/// Domain-separation label at the start of every MAC input.
const LABEL: &[u8; 12] = b"dos-auth-v1\0";

/// The job's shared secret: 16 to 64 bytes, normally 32 random ones.
///
/// Its `Debug` form does not show it. It is wiped from memory on drop (best effort).
#[derive(Clone)]
pub struct Secret {
    bytes: [u8; Secret::MAX_LEN],
    len: u8,
}

impl Secret {
    /// Shortest secret accepted (128 bits).
    pub const MIN_LEN: usize = 16;
    /// Longest secret accepted.
    pub const MAX_LEN: usize = 64;
    /// Length of a generated secret (256 bits).
    pub const GENERATED_LEN: usize = 32;

    /// A fresh secret of [`Secret::GENERATED_LEN`] bytes from the OS random source.
    pub fn generate() -> Result<Secret> {
        let mut b = [0u8; Secret::GENERATED_LEN];
        fill_random(&mut b)?;
        Secret::from_bytes(&b)
    }

    /// A secret from raw bytes; fails unless it has `MIN_LEN..=MAX_LEN` bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Secret> {
        if !(Secret::MIN_LEN..=Secret::MAX_LEN).contains(&b.len()) {
            return Err(Error::Malformed {
                what: "secret",
                reason: "must be 16 to 64 bytes",
            });
        }
        let mut bytes = [0u8; Secret::MAX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Secret {
            bytes,
            len: b.len() as u8,
        })
    }

    /// A secret from its hex form (as made by [`Secret::to_hex`], either case).
    pub fn from_hex(s: &str) -> Result<Secret> {
        let s = s.as_bytes();
        let bad = || Error::Malformed {
            what: "secret",
            reason: "not an even number of hex digits",
        };
        if s.len() % 2 != 0 || s.len() > 2 * Secret::MAX_LEN {
            return Err(bad());
        }
        let mut b = [0u8; Secret::MAX_LEN];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(bad)?;
            let lo = hex_val(pair[1]).ok_or_else(bad)?;
            b[i] = hi << 4 | lo;
        }
        let out = Secret::from_bytes(&b[..s.len() / 2]);
        wipe(&mut b);
        out
    }

    /// The secret as lowercase hex, for passing it to a child process.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(2 * self.len as usize);
        for &b in self.as_bytes() {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.len)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Overwrites `b` with zeroes in a way the optimiser keeps (best effort).
fn wipe(b: &mut [u8]) {
    b.fill(0);
    std::hint::black_box(b);
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Fills `b` from the OS random source.
pub fn fill_random(b: &mut [u8]) -> Result<()> {
    getrandom::fill(b).map_err(|e| Error::Sys {
        op: "getrandom",
        source: std::io::Error::from(e),
    })
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection.
    Initiator,
    /// The end that accepted it.
    Responder,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Initiator => 1,
            Role::Responder => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Initiator),
            2 => Some(Role::Responder),
            _ => None,
        }
    }
}

/// A decoded hello message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's role.
    pub role: Role,
    /// The sender's id (claimed, until its proof verifies).
    pub id: u64,
    /// The sender's nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// Encodes the message.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut m = [0u8; HELLO_LEN];
        m[0..4].copy_from_slice(&HELLO_MAGIC);
        m[4] = VERSION;
        m[5] = self.role.byte();
        m[8..16].copy_from_slice(&self.id.to_le_bytes());
        m[16..48].copy_from_slice(&self.nonce);
        m
    }

    /// Decodes a message; fails on a wrong length, magic, version, role or reserved bytes.
    pub fn decode(m: &[u8]) -> Result<Hello> {
        let m: &[u8; HELLO_LEN] = m.try_into().map_err(|_| fail("hello of wrong length"))?;
        check_head(&m[..8], &HELLO_MAGIC, 6)?;
        let role = Role::from_byte(m[5]).ok_or(fail("hello with an unknown role"))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&m[8..16]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&m[16..48]);
        Ok(Hello {
            role,
            id: u64::from_le_bytes(id),
            nonce,
        })
    }
}

/// Checks magic, version and the zero reserved bytes `reserved_from..8` of a message head.
fn check_head(h: &[u8], magic: &[u8; 4], reserved_from: usize) -> Result<()> {
    if h[0..4] != magic[..] {
        return Err(fail("bad magic (not a dos handshake)"));
    }
    if h[4] != VERSION {
        return Err(fail("unsupported handshake version"));
    }
    if h[reserved_from..8].iter().any(|&b| b != 0) {
        return Err(fail("reserved bytes set"));
    }
    Ok(())
}

#[cold]
fn fail(reason: &'static str) -> Error {
    Error::AuthFailed { reason }
}

fn encode_proof(tag: &[u8]) -> [u8; PROOF_LEN] {
    let mut m = [0u8; PROOF_LEN];
    m[0..4].copy_from_slice(&PROOF_MAGIC);
    m[4] = VERSION;
    m[8..40].copy_from_slice(tag);
    m
}

/// One end of the handshake, without I/O.
///
/// Send [`Handshake::hello`]; feed the peer's hello to [`Handshake::on_hello`] and
/// send the proof it returns; feed the peer's proof to [`Handshake::on_proof`],
/// which returns the peer's authenticated id. Any error means: close the connection.
/// The caller checks that the id is one it expects.
pub struct Handshake {
    /// HMAC keyed with the secret, with the label and context already absorbed.
    base: HmacSha256,
    role: Role,
    id: u64,
    nonce: [u8; NONCE_LEN],
    peer: Option<Hello>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("id", &self.id)
            .field("peer", &self.peer.map(|h| h.id))
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake as `role` with id `my_id`, with a fresh random nonce.
    pub fn new(secret: &Secret, context: &[u8], role: Role, my_id: u64) -> Result<Handshake> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        Ok(Handshake::with_nonce(secret, context, role, my_id, nonce))
    }

    /// As [`Handshake::new`] with a given nonce: for tests only, a reused nonce
    /// makes proofs replayable.
    #[doc(hidden)]
    pub fn with_nonce(
        secret: &Secret,
        context: &[u8],
        role: Role,
        my_id: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Handshake {
        let mut base =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
        base.update(LABEL);
        base.update(&(context.len() as u32).to_le_bytes());
        base.update(context);
        Handshake {
            base,
            role,
            id: my_id,
            nonce,
            peer: None,
        }
    }

    /// The hello message to send first.
    pub fn hello(&self) -> [u8; HELLO_LEN] {
        Hello {
            role: self.role,
            id: self.id,
            nonce: self.nonce,
        }
        .encode()
    }

    /// Takes the peer's hello; returns the proof to send.
    pub fn on_hello(&mut self, msg: &[u8]) -> Result<[u8; PROOF_LEN]> {
        if self.peer.is_some() {
            return Err(fail("second hello"));
        }
        let h = Hello::decode(msg)?;
        if h.role == self.role {
            return Err(fail("both ends claim the same role"));
        }
        if h.id == self.id {
            return Err(fail("peer claims our own id"));
        }
        if h.nonce == self.nonce {
            return Err(fail("peer echoed our nonce"));
        }
        self.peer = Some(h);
        let tag = self
            .mac(self.role, self.id, h.id, &self.nonce, &h.nonce)
            .finalize()
            .into_bytes();
        Ok(encode_proof(&tag))
    }

    /// The id the peer claimed in its hello (not yet authenticated).
    pub fn claimed_peer_id(&self) -> Option<u64> {
        self.peer.map(|h| h.id)
    }

    /// Checks the peer's proof; returns its authenticated id.
    pub fn on_proof(&self, msg: &[u8]) -> Result<u64> {
        let Some(h) = self.peer else {
            return Err(fail("proof before hello"));
        };
        let m: &[u8; PROOF_LEN] = msg.try_into().map_err(|_| fail("proof of wrong length"))?;
        check_head(&m[..8], &PROOF_MAGIC, 5)?;
        self.mac(h.role, h.id, self.id, &h.nonce, &self.nonce)
            .verify_slice(&m[8..40])
            .map_err(|_| fail("wrong proof (the peer does not hold the job's secret)"))?;
        Ok(h.id)
    }

    fn mac(
        &self,
        prover: Role,
        prover_id: u64,
        verifier_id: u64,
        prover_nonce: &[u8; NONCE_LEN],
        verifier_nonce: &[u8; NONCE_LEN],
    ) -> HmacSha256 {
        let mut m = self.base.clone();
        m.update(&[prover.byte()]);
        m.update(&prover_id.to_le_bytes());
        m.update(&verifier_id.to_le_bytes());
        m.update(prover_nonce);
        m.update(verifier_nonce);
        m
    }
}

/// Runs the whole handshake over a blocking stream; returns the peer's authenticated id.
///
/// Set a read timeout on the stream first if the peer may stall. The caller must
/// check that the returned id is one it expects, and close the stream on any error.
pub fn handshake<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    context: &[u8],
    role: Role,
    my_id: u64,
) -> Result<u64> {
    let mut hs = Handshake::new(secret, context, role, my_id)?;
    let io = |op| move |source| Error::Sys { op, source };
    stream
        .write_all(&hs.hello())
        .and_then(|()| stream.flush())
        .map_err(io("auth: send hello"))?;
    let mut hello = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut hello)
        .map_err(io("auth: receive hello"))?;
    let proof = hs.on_hello(&hello)?;
    stream
        .write_all(&proof)
        .and_then(|()| stream.flush())
        .map_err(io("auth: send proof"))?;
    let mut theirs = [0u8; PROOF_LEN];
    stream
        .read_exact(&mut theirs)
        .map_err(io("auth: receive proof"))?;
    hs.on_proof(&theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn secret() -> Secret {
        Secret::from_bytes(&[0x42; 32]).unwrap()
    }

    #[test]
    fn secret_hex_round_trip_and_limits() {
        let s = Secret::generate().unwrap();
        assert_eq!(s.as_bytes().len(), Secret::GENERATED_LEN);
        let h = s.to_hex();
        assert_eq!(h.len(), 64);
        assert_eq!(Secret::from_hex(&h).unwrap().as_bytes(), s.as_bytes());
        assert_eq!(
            Secret::from_hex(&h.to_uppercase()).unwrap().as_bytes(),
            s.as_bytes()
        );
        assert_ne!(Secret::generate().unwrap().as_bytes(), s.as_bytes());
        assert!(Secret::from_bytes(&[1; 15]).is_err());
        assert!(Secret::from_bytes(&[1; 65]).is_err());
        assert!(Secret::from_hex("abc").is_err());
        assert!(Secret::from_hex("zz00112233445566778899aabbccddeeff").is_err());
        assert!(Secret::from_hex(&"00".repeat(65)).is_err());
        assert_eq!(
            Secret::from_hex("000102030405060708090a0b0c0d0e0f")
                .unwrap()
                .as_bytes(),
            &(0..16).collect::<Vec<u8>>()[..]
        );
    }

    #[test]
    fn secret_debug_hides_the_bytes() {
        let s = Secret::from_bytes(&[0xAB; 16]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(!d.contains("171"), "{d}");
        let hs = Handshake::with_nonce(&s, b"", Role::Initiator, 1, [0xAB; 32]);
        let d = format!("{hs:?}");
        assert!(
            !d.contains("171") && !d.to_lowercase().contains("ab,"),
            "{d}"
        );
    }

    #[test]
    fn hello_golden_bytes() {
        let hs = Handshake::with_nonce(&secret(), b"ctx", Role::Responder, 0x0102, [7; 32]);
        let m = hs.hello();
        let mut want = vec![b'd', b'o', b's', b'H', 1, 2, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[7; 32]);
        assert_eq!(&m[..], &want[..]);
        let h = Hello::decode(&m).unwrap();
        assert_eq!((h.role, h.id, h.nonce), (Role::Responder, 0x0102, [7; 32]));
    }

    /// The tag was computed independently (Python's `hmac` module) from the
    /// documented MAC input, so a change of the input layout shows here.
    #[test]
    fn proof_golden_bytes() {
        let mut i = Handshake::with_nonce(&secret(), b"ctx", Role::Initiator, 3, [1; 32]);
        let r = Handshake::with_nonce(&secret(), b"ctx", Role::Responder, 9, [2; 32]);
        let p = i.on_hello(&r.hello()).unwrap();
        assert_eq!(&p[..8], b"dosP\x01\0\0\0");
        assert_eq!(hex(&p[8..]), GOLDEN_TAG);
    }

    const GOLDEN_TAG: &str = "7bd083fe735a5b37de412520abed8edb7662095a4c7ad09652903faa01a7fd2e";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn pair(
        si: &Secret,
        sr: &Secret,
        ci: &[u8],
        cr: &[u8],
        ids: (u64, u64),
    ) -> (Result<u64>, Result<u64>) {
        let mut i = Handshake::new(si, ci, Role::Initiator, ids.0).unwrap();
        let mut r = Handshake::new(sr, cr, Role::Responder, ids.1).unwrap();
        let (hi, hr) = (i.hello(), r.hello());
        let pi = i.on_hello(&hr);
        let pr = r.on_hello(&hi);
        match (pi, pr) {
            (Ok(pi), Ok(pr)) => (i.on_proof(&pr), r.on_proof(&pi)),
            (a, b) => (a.map(|_| 0), b.map(|_| 0)),
        }
    }

    #[test]
    fn matching_secrets_authenticate_both_ends() {
        let (a, b) = pair(&secret(), &secret(), b"x", b"x", (1, 2));
        assert_eq!((a.unwrap(), b.unwrap()), (2, 1));
    }

    #[test]
    fn wrong_secret_or_context_fails_both_ends() {
        let other = Secret::from_bytes(&[0x43; 32]).unwrap();
        let (a, b) = pair(&secret(), &other, b"x", b"x", (1, 2));
        assert!(matches!(a, Err(Error::AuthFailed { .. })));
        assert!(matches!(b, Err(Error::AuthFailed { .. })));
        let (a, b) = pair(&secret(), &secret(), b"x", b"y", (1, 2));
        assert!(a.is_err() && b.is_err());
    }

    #[test]
    fn same_role_same_id_and_replays_are_rejected() {
        let s = secret();
        let mut a = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        let b = Handshake::new(&s, b"", Role::Initiator, 2).unwrap();
        assert!(a.on_hello(&b.hello()).is_err());
        let mut a = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        let b = Handshake::new(&s, b"", Role::Responder, 1).unwrap();
        assert!(a.on_hello(&b.hello()).is_err());
        // Reflection: a's own proof sent back to it does not verify.
        let mut a = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        let b = Handshake::new(&s, b"", Role::Responder, 2).unwrap();
        let pa = a.on_hello(&b.hello()).unwrap();
        assert!(a.on_proof(&pa).is_err());
        // Replay: a proof from an earlier connection does not verify on a new one.
        let mut a = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        let mut b1 = Handshake::new(&s, b"", Role::Responder, 2).unwrap();
        a.on_hello(&b1.hello()).unwrap();
        let pb1 = b1.on_hello(&a.hello()).unwrap();
        assert_eq!(a.on_proof(&pb1).unwrap(), 2);
        let mut a2 = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        a2.on_hello(&b1.hello()).unwrap();
        assert!(a2.on_proof(&pb1).is_err());
        // Proof before hello, second hello.
        let fresh = Handshake::new(&s, b"", Role::Initiator, 1).unwrap();
        assert!(fresh.on_proof(&pb1).is_err());
        assert!(a.on_hello(&b.hello()).is_err());
    }

    #[test]
    fn decoders_reject_bad_input() {
        let hs = Handshake::new(&secret(), b"", Role::Initiator, 1).unwrap();
        let good = hs.hello();
        for i in [0usize, 4, 5, 6, 7] {
            let mut m = good;
            m[i] ^= 0xff;
            assert!(Hello::decode(&m).is_err(), "byte {i}");
        }
        assert!(Hello::decode(&good[..47]).is_err());
        assert!(Hello::decode(&[]).is_err());
    }

    #[test]
    fn handshake_over_streams() {
        let s = secret();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || handshake(&mut b, &s2, b"c", Role::Responder, 5));
        assert_eq!(handshake(&mut a, &s, b"c", Role::Initiator, 4).unwrap(), 5);
        assert_eq!(t.join().unwrap().unwrap(), 4);

        let (mut a, mut b) = UnixStream::pair().unwrap();
        let other = Secret::from_bytes(&[9; 16]).unwrap();
        let t = std::thread::spawn(move || handshake(&mut b, &other, b"c", Role::Responder, 5));
        assert!(matches!(
            handshake(&mut a, &s, b"c", Role::Initiator, 4),
            Err(Error::AuthFailed { .. })
        ));
        assert!(t.join().unwrap().is_err());
    }

    #[test]
    fn handshake_with_a_closed_stream_fails() {
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(handshake(&mut a, &secret(), b"c", Role::Initiator, 4).is_err());
    }

    proptest::proptest! {
        #[test]
        fn hello_decode_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = Hello::decode(&b);
            let hs = Handshake::new(&secret(), b"", Role::Initiator, 1).unwrap();
            let _ = hs.on_proof(&b);
        }
    }
}
