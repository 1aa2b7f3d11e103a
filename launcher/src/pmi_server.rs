//! The wire-up service: dosrun's side of `dos::pmi`.
//!
//! [`Wireup`] is the protocol logic without I/O (connections are numbers,
//! requests come in decoded, replies and other effects go out as
//! [`Action`]s). [`Service`] drives it from a non-blocking abstract Unix
//! socket inside the supervisor's poll loop.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use dos::pmi::wire::{self, split_frame, Reply, Request};

use crate::sys;

/// A connection's number, never reused within a job.
pub type ConnId = u64;

/// Most bytes of keys and values the service holds for one job.
pub const MAX_STORE: usize = 256 << 20;

/// A reply the service owns until it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedReply {
    /// [`Reply::Ok`].
    Ok,
    /// [`Reply::Value`].
    Value(Vec<u8>),
    /// [`Reply::NotFound`].
    NotFound,
    /// [`Reply::FenceDone`].
    FenceDone,
    /// [`Reply::Error`].
    Error(String),
}

impl OwnedReply {
    fn encode(&self, out: &mut Vec<u8>) {
        let r = match self {
            OwnedReply::Ok => Reply::Ok,
            OwnedReply::Value(v) => Reply::Value(v),
            OwnedReply::NotFound => Reply::NotFound,
            OwnedReply::FenceDone => Reply::FenceDone,
            OwnedReply::Error(m) => Reply::Error(m),
        };
        // Values are bounded by the request decoder and messages are made
        // here, short; a failure only drops this reply.
        let _ = r.encode(out);
    }
}

/// An effect of the protocol logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a reply on a connection.
    Reply(ConnId, OwnedReply),
    /// Close a connection (after sending what is queued on it).
    Close(ConnId),
    /// A rank asked to stop the job.
    Abort {
        /// The rank.
        rank: usize,
        /// The exit status it asked for.
        code: i32,
        /// Its message.
        msg: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not connected yet.
    Waiting,
    /// Connected on `conn`; `fencing` while it waits in a fence.
    Attached { conn: ConnId, fencing: bool },
    /// Said Finalize.
    Finalized,
    /// Left without Finalize (disconnected, misbehaved or exited).
    Gone,
}

/// The wire-up protocol state of one job, without I/O.
#[derive(Debug)]
pub struct Wireup {
    secret: u64,
    slots: Vec<Slot>,
    conns: HashMap<ConnId, usize>,
    committed: HashMap<String, Vec<u8>>,
    pending: HashMap<String, Vec<u8>>,
    stored: usize,
    fencing: usize,
}

impl Wireup {
    /// A job of `size` ranks whose connections must present `secret`.
    pub fn new(size: usize, secret: u64) -> Wireup {
        Wireup {
            secret,
            slots: vec![Slot::Waiting; size],
            conns: HashMap::new(),
            committed: HashMap::new(),
            pending: HashMap::new(),
            stored: 0,
            fencing: 0,
        }
    }

    /// Handles one decoded request from `conn`.
    pub fn request(&mut self, conn: ConnId, req: Request<'_>, out: &mut Vec<Action>) {
        let Some(&rank) = self.conns.get(&conn) else {
            return self.hello(conn, req, out);
        };
        let slot = self.slots[rank];
        let Slot::Attached { fencing, .. } = slot else {
            return self.refuse(conn, "the rank has finalized or left the wire-up", out);
        };
        if fencing {
            return self.refuse(conn, "request while waiting in a fence", out);
        }
        match req {
            Request::Hello { .. } => self.refuse(conn, "hello sent twice", out),
            Request::Put { key, value } => {
                let old = self.pending.get(key).map_or(0, |v| key.len() + v.len());
                let new = key.len() + value.len();
                if self.stored - old + new > MAX_STORE {
                    out.push(Action::Reply(
                        conn,
                        OwnedReply::Error("the wire-up store is full".into()),
                    ));
                    return;
                }
                self.stored = self.stored - old + new;
                self.pending.insert(key.to_string(), value.to_vec());
                out.push(Action::Reply(conn, OwnedReply::Ok));
            }
            Request::Fence => {
                self.slots[rank] = Slot::Attached {
                    conn,
                    fencing: true,
                };
                self.fencing += 1;
                self.check_fence(out);
            }
            Request::Get { key } => {
                let r = match self.committed.get(key) {
                    Some(v) => OwnedReply::Value(v.clone()),
                    None => OwnedReply::NotFound,
                };
                out.push(Action::Reply(conn, r));
            }
            Request::Abort { code, msg } => {
                out.push(Action::Reply(conn, OwnedReply::Ok));
                out.push(Action::Abort {
                    rank,
                    code,
                    msg: msg.to_string(),
                });
            }
            Request::Finalize => {
                self.slots[rank] = Slot::Finalized;
                out.push(Action::Reply(conn, OwnedReply::Ok));
                self.check_fence(out);
            }
        }
    }

    fn hello(&mut self, conn: ConnId, req: Request<'_>, out: &mut Vec<Action>) {
        let Request::Hello { rank, secret } = req else {
            return self.refuse(conn, "the first request must be hello", out);
        };
        if secret != self.secret {
            return self.refuse(conn, "wrong job secret", out);
        }
        let rank = rank as usize;
        match self.slots.get(rank) {
            None => self.refuse(conn, "rank out of range", out),
            Some(Slot::Waiting) => {
                self.slots[rank] = Slot::Attached {
                    conn,
                    fencing: false,
                };
                self.conns.insert(conn, rank);
                out.push(Action::Reply(conn, OwnedReply::Ok));
            }
            Some(_) => self.refuse(conn, "rank already connected", out),
        }
    }

    /// Replies with an error and closes `conn`; its rank, if any, is gone.
    fn refuse(&mut self, conn: ConnId, why: &str, out: &mut Vec<Action>) {
        out.push(Action::Reply(conn, OwnedReply::Error(why.to_string())));
        out.push(Action::Close(conn));
        self.disconnected(conn, out);
    }

    /// The connection of `rank`, while it is attached.
    pub fn conn_of(&self, rank: usize) -> Option<ConnId> {
        match self.slots.get(rank) {
            Some(Slot::Attached { conn, .. }) => Some(*conn),
            _ => None,
        }
    }

    /// `conn` closed or misbehaved: a rank attached to it has left.
    pub fn disconnected(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(rank) = self.conns.remove(&conn) else {
            return;
        };
        if let Slot::Attached { fencing, .. } = self.slots[rank] {
            if fencing {
                self.fencing -= 1;
            }
            self.slots[rank] = Slot::Gone;
            self.check_fence(out);
        }
    }

    /// Rank `rank`'s process ended.
    pub fn rank_exited(&mut self, rank: usize, out: &mut Vec<Action>) {
        match self.slots.get(rank).copied() {
            Some(Slot::Waiting) => {
                self.slots[rank] = Slot::Gone;
                self.check_fence(out);
            }
            Some(Slot::Attached { conn, .. }) => {
                out.push(Action::Close(conn));
                self.disconnected(conn, out);
            }
            _ => {}
        }
    }

    /// Completes the fence when every rank is in it, or fails it when some
    /// rank can no longer enter it.
    fn check_fence(&mut self, out: &mut Vec<Action>) {
        if self.fencing == 0 {
            return;
        }
        if self.fencing == self.slots.len() {
            self.committed.extend(self.pending.drain());
            self.recount();
            self.release(OwnedReply::FenceDone, out);
            return;
        }
        let gone = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Gone | Slot::Finalized));
        if let Some(r) = gone {
            let why = format!(
                "the fence cannot complete: rank {r} left the wire-up (finalized, disconnected or exited) without entering it"
            );
            self.release(OwnedReply::Error(why), out);
        }
    }

    fn release(&mut self, reply: OwnedReply, out: &mut Vec<Action>) {
        for s in &mut self.slots {
            if let Slot::Attached {
                conn,
                fencing: f @ true,
            } = s
            {
                *f = false;
                out.push(Action::Reply(*conn, reply.clone()));
            }
        }
        self.fencing = 0;
    }

    fn recount(&mut self) {
        self.stored = self
            .committed
            .iter()
            .chain(self.pending.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
    }
}

/// Most connections that have not said hello yet.
const MAX_UNBOUND: usize = 64;

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    out_off: usize,
}

/// What the service reports to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortRequest {
    /// The rank that asked.
    pub rank: usize,
    /// The exit status it asked for.
    pub code: i32,
    /// Its message.
    pub msg: String,
}

/// The wire-up service on its socket.
#[derive(Debug)]
pub struct Service {
    listener: UnixListener,
    conns: HashMap<ConnId, Conn>,
    next: ConnId,
    logic: Wireup,
    uid: u32,
    actions: Vec<Action>,
    aborts: Vec<AbortRequest>,
}

/// What a polled descriptor of the service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollTag {
    /// The listening socket.
    Listener,
    /// A connection.
    Conn(ConnId),
}

impl Service {
    /// Listens on the abstract socket `name` for a job of `size` ranks.
    pub fn bind(name: &str, size: usize, secret: u64) -> io::Result<Service> {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(Service {
            listener,
            conns: HashMap::new(),
            next: 1,
            logic: Wireup::new(size, secret),
            uid: sys::euid(),
            actions: Vec::new(),
            aborts: Vec::new(),
        })
    }

    /// Adds the descriptors to poll (and what they are) to `fds`/`tags`.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>, tags: &mut Vec<PollTag>) {
        fds.push(pollin(self.listener.as_raw_fd()));
        tags.push(PollTag::Listener);
        for (&id, c) in &self.conns {
            let mut p = pollin(c.stream.as_raw_fd());
            if c.out_off < c.outbuf.len() {
                p.events |= libc::POLLOUT;
            }
            fds.push(p);
            tags.push(PollTag::Conn(id));
        }
    }

    /// Handles readiness of one of its descriptors.
    pub fn ready(&mut self, tag: PollTag, revents: i16) {
        match tag {
            PollTag::Listener => self.accept(),
            PollTag::Conn(id) => {
                if revents & libc::POLLOUT != 0 {
                    self.flush(id);
                }
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read(id);
                }
            }
        }
        self.apply();
    }

    /// Rank `rank`'s process ended.
    pub fn rank_exited(&mut self, rank: usize) {
        // Take what it sent before it went (a Finalize, say) first.
        if let Some(conn) = self.logic.conn_of(rank) {
            self.read(conn);
            self.apply();
        }
        self.logic.rank_exited(rank, &mut self.actions);
        self.apply();
    }

    /// Abort requests received since the last call.
    pub fn take_aborts(&mut self) -> Vec<AbortRequest> {
        std::mem::take(&mut self.aborts)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let unbound = self.conns.len().saturating_sub(self.logic.conns.len());
                    let same_user = sys::peer_uid(stream.as_raw_fd()).ok() == Some(self.uid);
                    if !same_user || unbound >= MAX_UNBOUND || stream.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    let id = self.next;
                    self.next += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            inbuf: Vec::new(),
                            outbuf: Vec::new(),
                            out_off: 0,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn read(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&chunk[..n]);
                    if c.inbuf.len() > wire::HEADER_LEN + wire::MAX_BODY {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        // Handle the complete frames in order.
        let mut used = 0;
        let mut bad = false;
        loop {
            match split_frame(&c.inbuf[used..]) {
                Ok(Some((h, body, n))) => {
                    match Request::decode(h, body) {
                        Ok(req) => self.logic.request(id, req, &mut self.actions),
                        Err(_) => bad = true,
                    }
                    used += n;
                    if bad || self.actions.contains(&Action::Close(id)) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        c.inbuf.drain(..used);
        if bad {
            self.actions.push(Action::Reply(
                id,
                OwnedReply::Error("malformed frame".into()),
            ));
            self.actions.push(Action::Close(id));
            self.logic.disconnected(id, &mut self.actions);
        } else if eof {
            self.actions.push(Action::Close(id));
            self.logic.disconnected(id, &mut self.actions);
        }
    }

    fn apply(&mut self) {
        let actions = std::mem::take(&mut self.actions);
        for a in actions {
            match a {
                Action::Reply(id, r) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        r.encode(&mut c.outbuf);
                        self.flush(id);
                    }
                }
                Action::Close(id) => {
                    self.flush(id);
                    self.conns.remove(&id);
                }
                Action::Abort { rank, code, msg } => {
                    self.aborts.push(AbortRequest { rank, code, msg })
                }
            }
        }
    }

    /// Writes what the connection can take now.
    fn flush(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while c.out_off < c.outbuf.len() {
            match c.stream.write(&c.outbuf[c.out_off..]) {
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Would block: poll for POLLOUT. Other errors: the read side
                // sees the connection close.
                Err(_) => break,
            }
        }
        if c.out_off == c.outbuf.len() {
            c.outbuf.clear();
            c.out_off = 0;
        }
    }
}

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 42;

    fn hello(w: &mut Wireup, conn: ConnId, rank: u32) -> Vec<Action> {
        let mut out = Vec::new();
        w.request(conn, Request::Hello { rank, secret: S }, &mut out);
        out
    }

    fn req(w: &mut Wireup, conn: ConnId, r: Request<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        w.request(conn, r, &mut out);
        out
    }

    fn ok(c: ConnId) -> Action {
        Action::Reply(c, OwnedReply::Ok)
    }

    fn is_error_for(a: &Action, c: ConnId) -> bool {
        matches!(a, Action::Reply(x, OwnedReply::Error(_)) if *x == c)
    }

    #[test]
    fn put_fence_get() {
        let mut w = Wireup::new(2, S);
        assert_eq!(hello(&mut w, 10, 0), [ok(10)]);
        assert_eq!(hello(&mut w, 11, 1), [ok(11)]);
        let put = |k, v| Request::Put { key: k, value: v };
        assert_eq!(req(&mut w, 10, put("a", b"0")), [ok(10)]);
        // Not visible before the fence, not even to its writer.
        assert_eq!(
            req(&mut w, 10, Request::Get { key: "a" }),
            [Action::Reply(10, OwnedReply::NotFound)]
        );
        assert_eq!(req(&mut w, 10, Request::Fence), []);
        assert_eq!(req(&mut w, 11, put("b", b"1")), [ok(11)]);
        let done = req(&mut w, 11, Request::Fence);
        assert_eq!(done.len(), 2);
        assert!(done.contains(&Action::Reply(10, OwnedReply::FenceDone)));
        assert!(done.contains(&Action::Reply(11, OwnedReply::FenceDone)));
        for (c, k, v) in [(10, "b", b"1"), (11, "a", b"0")] {
            assert_eq!(
                req(&mut w, c, Request::Get { key: k }),
                [Action::Reply(c, OwnedReply::Value(v.to_vec()))]
            );
        }
        // A second epoch replaces values.
        assert_eq!(req(&mut w, 10, put("a", b"new")), [ok(10)]);
        assert_eq!(req(&mut w, 10, Request::Fence), []);
        assert_eq!(req(&mut w, 11, Request::Fence).len(), 2);
        assert_eq!(
            req(&mut w, 11, Request::Get { key: "a" }),
            [Action::Reply(11, OwnedReply::Value(b"new".to_vec()))]
        );
        assert_eq!(w.stored, "a".len() + 3 + "b".len() + 1);
        assert_eq!(req(&mut w, 10, Request::Finalize), [ok(10)]);
        assert_eq!(req(&mut w, 11, Request::Finalize), [ok(11)]);
    }

    #[test]
    fn bad_hellos_are_refused_and_closed() {
        let mut w = Wireup::new(2, S);
        let out = req(
            &mut w,
            1,
            Request::Hello {
                rank: 0,
                secret: S + 1,
            },
        );
        assert!(is_error_for(&out[0], 1) && out[1] == Action::Close(1));
        let out = hello(&mut w, 2, 2);
        assert!(is_error_for(&out[0], 2) && out[1] == Action::Close(2));
        let out = req(&mut w, 3, Request::Fence);
        assert!(is_error_for(&out[0], 3) && out[1] == Action::Close(3));
        assert_eq!(hello(&mut w, 4, 0), [ok(4)]);
        let out = hello(&mut w, 5, 0);
        assert!(is_error_for(&out[0], 5) && out[1] == Action::Close(5));
        // Hello twice on one connection: the rank is gone.
        let out = hello(&mut w, 4, 0);
        assert!(is_error_for(&out[0], 4) && out[1] == Action::Close(4));
        assert_eq!(w.slots[0], Slot::Gone);
    }

    #[test]
    fn a_fence_fails_when_a_rank_leaves() {
        let mut w = Wireup::new(3, S);
        hello(&mut w, 1, 0);
        hello(&mut w, 2, 1);
        assert_eq!(req(&mut w, 1, Request::Fence), []);
        // Rank 2 never connected and exits: rank 0's fence fails.
        let mut out = Vec::new();
        w.rank_exited(2, &mut out);
        assert_eq!(out.len(), 1);
        assert!(is_error_for(&out[0], 1));
        // Later fences fail at once, and the connection stays usable.
        let out = req(&mut w, 2, Request::Fence);
        assert!(is_error_for(&out[0], 2));
        assert_eq!(
            req(&mut w, 2, Request::Get { key: "x" }),
            [Action::Reply(2, OwnedReply::NotFound)]
        );
    }

    #[test]
    fn disconnect_and_finalize_doom_fences() {
        let mut w = Wireup::new(2, S);
        hello(&mut w, 1, 0);
        hello(&mut w, 2, 1);
        req(&mut w, 1, Request::Fence);
        let mut out = Vec::new();
        w.disconnected(2, &mut out);
        assert!(is_error_for(&out[0], 1));

        let mut w = Wireup::new(2, S);
        hello(&mut w, 1, 0);
        hello(&mut w, 2, 1);
        req(&mut w, 1, Request::Fence);
        let out = req(&mut w, 2, Request::Finalize);
        assert_eq!(out[0], ok(2));
        assert!(is_error_for(&out[1], 1));
        // After finalize, requests are refused.
        let out = req(&mut w, 2, Request::Get { key: "k" });
        assert!(is_error_for(&out[0], 2));
    }

    #[test]
    fn abort_is_reported() {
        let mut w = Wireup::new(1, S);
        hello(&mut w, 1, 0);
        assert_eq!(
            req(
                &mut w,
                1,
                Request::Abort {
                    code: 5,
                    msg: "bye"
                }
            ),
            [
                ok(1),
                Action::Abort {
                    rank: 0,
                    code: 5,
                    msg: "bye".into()
                }
            ]
        );
    }

    #[test]
    fn the_store_is_bounded() {
        let mut w = Wireup::new(1, S);
        hello(&mut w, 1, 0);
        let v = vec![0u8; wire::MAX_VALUE];
        let mut full = false;
        for i in 0..(MAX_STORE / wire::MAX_VALUE + 2) {
            let k = format!("k{i}");
            let out = req(&mut w, 1, Request::Put { key: &k, value: &v });
            if is_error_for(&out[0], 1) {
                full = true;
                break;
            }
        }
        assert!(full);
        assert!(w.stored <= MAX_STORE);
    }
}
