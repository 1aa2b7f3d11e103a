//! Remote procedure calls: run a function on another rank as if it were local.
//!
//! Every rank registers the handlers it serves under a name; any rank calls
//! them by name with typed arguments and gets a typed result. Arguments and
//! results travel in [postcard]'s compact binary serde encoding, or as plain
//! bytes ([`Rpc::call_pod`], [`Rpc::register_pod`]: slices of plain-data
//! types, no serialization at all).
//!
//! ```
//! let world = dos::init().unwrap();
//! let rpc = world.rpc();
//! rpc.register("add", |_ctx, (a, b): (u64, u64)| Ok::<_, String>(a + b));
//! world.barrier().unwrap(); // every rank has registered
//! let next = (world.rank() + 1) % world.size();
//! let sum: u64 = rpc.call(next, "add", &(2u64, 3u64)).unwrap();
//! assert_eq!(sum, 5);
//! ```
//!
//! * **Calls**: blocking ([`Rpc::call`]), asynchronous ([`Rpc::call_async`]: a
//!   [`Pending`] to wait on, test, or `.await`), one-way ([`Rpc::notify`]: no
//!   reply), and to every rank of the communicator ([`Rpc::call_all`]). A rank
//!   may call itself.
//! * **Who runs handlers**: the rank's main thread while it is inside any dos
//!   call (it serves requests as part of making progress), and otherwise the
//!   rank's RPC service thread, started by [`crate::Comm::rpc`]: it takes the
//!   engine over once the main thread has stayed away from dos for about a
//!   millisecond (it computes), serves, and sleeps in the transports' wait when
//!   idle; the main thread's next dos call takes the engine back (see
//!   ARCHITECTURE.md, "the service thread"). So handlers must be
//!   `Send + Sync`; they may call other ranks themselves through their
//!   [`Ctx`] (nested calls).
//! * **Failures are typed, and the server keeps serving**: a handler that
//!   returns an error or panics, an unknown handler, arguments or a result
//!   that do not decode: [`Error::Rpc`] with an [`RpcFailure`]; a target that
//!   died: [`Error::PeerFailed`] naming it.
//! * **Handlers belong to the process, ranks to the communicator**: a rank
//!   has one table of handlers, shared by the endpoints of all its
//!   communicators ([`crate::Comm::rpc`] of the world, of a split, of a dup):
//!   a handler registered through any of them serves calls made through any
//!   of them, and registering a name again (through any endpoint) replaces
//!   the earlier handler of that name. Give the handlers of a library names
//!   of its own (a prefix). What differs between endpoints is the numbering
//!   of ranks: [`Rpc::call`] and the other methods of [`Rpc`] take ranks of
//!   the endpoint's communicator, while inside a handler [`Ctx::source`] and
//!   [`Ctx::call`]/[`Ctx::notify`] use **world** ranks (a handler does not
//!   know through which communicator it was called).
//! * **Limits**: arguments and results travel as one active message each, so
//!   they are bounded by the route's largest message (about 64 KiB within a
//!   node and over roce, 1 MiB over tcp): a larger one fails with a transport
//!   error, and a result that large reaches the caller as
//!   [`RpcFailure::Failed`].
//!
//! [postcard]: https://docs.rs/postcard

pub mod wire;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytemuck::Pod;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::am::{self, Hooks, Ids, Service};
use crate::engine::{Engine, Shared};
use crate::error::RpcFailure;
use crate::{Comm, Error, Result};
use wire::{status, Rep, Req};

/// What a handler gives back: a status of [`wire::status`] and the bytes.
type Outcome = (u8, Vec<u8>);

/// A registered handler, type-erased: arguments in, outcome out.
type Handler = Arc<dyn Fn(&Ctx<'_>, &[u8]) -> Outcome + Send + Sync>;

/// Internal reply status of a call whose target died.
const PEER_FAILED: u8 = 0xff;

/// RPC state of an engine.
#[derive(Default)]
pub(crate) struct Table {
    handlers: HashMap<u64, Handler>,
    inbox: VecDeque<Incoming>,
    calls: HashMap<u64, Call>,
    next_call: u64,
    /// Small requests and replies to ranks on other nodes, gathered into one
    /// BATCH message per rank (see [`enqueue`]).
    out: HashMap<usize, Vec<u8>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("rpc::Table")
            .field("handlers", &self.handlers.len())
            .field("inbox", &self.inbox.len())
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// A request waiting for its handler.
struct Incoming {
    src: usize,
    req: Req,
    args: Vec<u8>,
}

/// A call in flight.
struct Call {
    dest: usize,
    reply: Option<Outcome>,
    waker: Option<std::task::Waker>,
}

/// RPC as it registers with the engine: the RPC block of active-message ids,
/// sending batches before the transports are polled, serving requests after,
/// and failing the calls to a dead peer. (The service thread that answers
/// while the main thread computes is the engine's: [`crate::engine::entry`].)
pub(crate) static SERVICE: Service = Service {
    name: "rpc",
    am: Some((
        Ids {
            first: wire::FIRST_ID,
            last: wire::LAST_ID,
        },
        on_am,
    )),
    state: || Box::new(RefCell::new(Table::default())),
    hooks: Hooks {
        // Messages gathered for other nodes leave before anything waits.
        flush: Some(|eng| {
            if eng.rpc().borrow().has_batches() {
                flush_all(eng);
            }
        }),
        // Handlers run outside the transports' callbacks.
        serve: Some(|eng| {
            if eng.rpc().borrow().has_requests() {
                serve(eng)
            } else {
                0
            }
        }),
        peer_failed: Some(peer_failed),
        ..Hooks::NONE
    },
};

const _: () = assert!(am::RPC.holds(Ids {
    first: wire::FIRST_ID,
    last: wire::LAST_ID,
}));

impl Engine {
    /// RPC state: handlers, requests to serve, calls in flight.
    #[inline]
    pub(crate) fn rpc(&self) -> &RefCell<Table> {
        self.service(&SERVICE)
    }
}

impl Table {
    /// Whether requests wait for their handlers.
    #[inline]
    pub(crate) fn has_requests(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Whether batches wait to be sent.
    #[inline]
    pub(crate) fn has_batches(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Messages of at most this many bytes to a rank on another node wait in
/// its batch; a batch goes out when it reaches [`BATCH_BYTES`], when this
/// rank next makes progress (any wait, the start of a blocking call), or at
/// the end of a round of serving. One network message then carries many
/// calls: over tcp between two hosts, one-way calls went from about 110 000
/// to over a million per second.
const BATCH_MAX_MSG: usize = 4096;
/// A batch is sent once it holds this many bytes.
const BATCH_BYTES: usize = 32 * 1024;

/// Sends RPC message `id` (`hdr`, then `body`) to world rank `dest`: small
/// ones to other nodes join `dest`'s batch, the rest go at once (after the
/// batch, so that each rank's messages keep their order).
fn enqueue(eng: &Engine, dest: usize, id: u8, hdr: &[u8], body: &[u8]) -> Result<()> {
    let small = hdr.len() + body.len() <= BATCH_MAX_MSG;
    if small && eng.net_of(dest).is_some() {
        let full = {
            let mut t = eng.rpc().borrow_mut();
            let b = t.out.entry(dest).or_default();
            wire::batch_push(b, id, hdr, body);
            b.len() >= BATCH_BYTES
        };
        return if full { flush(eng, dest) } else { Ok(()) };
    }
    flush(eng, dest)?;
    eng.send_copy(dest, id, hdr, body)
}

/// Sends `dest`'s batch, if any.
fn flush(eng: &Engine, dest: usize) -> Result<()> {
    let Some(b) = eng.rpc().borrow_mut().out.remove(&dest) else {
        return Ok(());
    };
    eng.send_copy(dest, wire::BATCH, &[], &b)
}

/// Sends every batch (called when the engine makes progress).
pub(crate) fn flush_all(eng: &Engine) {
    let dests: Vec<usize> = eng.rpc().borrow().out.keys().copied().collect();
    for d in dests {
        if let Err(e) = flush(eng, d) {
            // The calls in it fail when the peer's failure is seen; replies
            // and one-way calls to a dead rank are lost with it.
            let _ = e;
        }
    }
}

/// An RPC message arrived from world rank `src`.
pub(crate) fn on_am(eng: &Engine, src: usize, id: u8, data: &[u8]) -> Result<()> {
    if id == wire::BATCH {
        for e in wire::batch_entries(data, src) {
            let (id, msg) = e?;
            on_one(eng, src, id, msg)?;
        }
        return Ok(());
    }
    on_one(eng, src, id, data)
}

/// One request or reply from world rank `src`.
fn on_one(eng: &Engine, src: usize, id: u8, data: &[u8]) -> Result<()> {
    match id {
        wire::REQ => {
            let (req, args) = Req::decode(data, src)?;
            eng.rpc().borrow_mut().inbox.push_back(Incoming {
                src,
                req,
                args: args.to_vec(),
            });
        }
        _ => {
            let (rep, payload) = Rep::decode(data, src)?;
            let mut t = eng.rpc().borrow_mut();
            // A reply to a call given up (its `Pending` dropped) is dropped.
            if let Some(c) = t.calls.get_mut(&rep.call) {
                if c.dest != src {
                    return Err(Error::Protocol {
                        src,
                        reason: "RPC reply from a rank that was not called",
                    });
                }
                c.reply = Some((rep.status, payload.to_vec()));
                if let Some(w) = c.waker.take() {
                    w.wake();
                }
            }
        }
    }
    Ok(())
}

/// World rank `peer` died: its calls in flight fail.
pub(crate) fn peer_failed(eng: &Engine, peer: usize) {
    let mut t = eng.rpc().borrow_mut();
    for c in t.calls.values_mut().filter(|c| c.dest == peer) {
        c.reply.get_or_insert((PEER_FAILED, Vec::new()));
        if let Some(w) = c.waker.take() {
            w.wake();
        }
    }
}

/// Runs the handlers of the requests that arrived; returns how many ran.
/// Called by whichever thread drives the engine, outside transport callbacks.
pub(crate) fn serve(eng: &Engine) -> usize {
    let mut n = 0;
    loop {
        // One at a time, the table unborrowed while a handler runs (it may
        // call, and so serve, itself).
        let Some(inc) = eng.rpc().borrow_mut().inbox.pop_front() else {
            // The replies of this round leave together.
            if eng.rpc().borrow().has_batches() {
                flush_all(eng);
            }
            return n;
        };
        n += 1;
        let handler = eng.rpc().borrow().handlers.get(&inc.req.handler).cloned();
        let (st, bytes) = match handler {
            None => (status::UNKNOWN, Vec::new()),
            Some(h) => {
                let ctx = Ctx { eng, src: inc.src };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&ctx, &inc.args)))
                {
                    Ok(o) => o,
                    Err(p) => (status::PANICKED, panic_message(&*p).into_bytes()),
                }
            }
        };
        if inc.req.flags & wire::ONE_WAY != 0 {
            continue;
        }
        let hdr = Rep {
            call: inc.req.call,
            status: st,
        }
        .encode();
        // A result too large for one message reaches the caller as a failure.
        let sent = enqueue(eng, inc.src, wire::REP, &hdr, &bytes);
        if let Err(e) = sent {
            if matches!(e, Error::PeerFailed { .. }) {
                continue;
            }
            let hdr = Rep {
                call: inc.req.call,
                status: status::FAILED,
            }
            .encode();
            let msg = format!("the result could not be sent: {e}");
            let _ = enqueue(eng, inc.src, wire::REP, &hdr, msg.as_bytes());
        }
    }
}

/// `bytes` (a whole number of `T`s) copied into an aligned vector of `T`.
fn pod_vec<T: Pod>(bytes: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return Vec::new();
    }
    let mut v = vec![T::zeroed(); bytes.len() / size];
    let n = v.len() * size;
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&bytes[..n]);
    v
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Sends a request to world rank `dest`; returns its call number (0 for one-way).
fn start(eng: &Engine, dest: usize, name: &str, one_way: bool, args: &[u8]) -> Result<u64> {
    let call = if one_way {
        0
    } else {
        let mut t = eng.rpc().borrow_mut();
        t.next_call += 1;
        let c = t.next_call;
        t.calls.insert(
            c,
            Call {
                dest,
                reply: None,
                waker: None,
            },
        );
        c
    };
    let hdr = Req {
        flags: if one_way { wire::ONE_WAY } else { 0 },
        call,
        handler: wire::handler_id(name),
    }
    .encode();
    match enqueue(eng, dest, wire::REQ, &hdr, args) {
        Ok(()) => Ok(call),
        Err(e) => {
            eng.rpc().borrow_mut().calls.remove(&call);
            // A target whose connection broke died (as far as anyone can tell).
            Err(match e {
                Error::Transport(dos_transport::Error::PeerUnreachable { .. }) => {
                    Error::PeerFailed { rank: dest }
                }
                e => e,
            })
        }
    }
}

/// Takes the reply of `call` if it arrived.
fn take_reply(eng: &Engine, call: u64) -> Option<Outcome> {
    let mut t = eng.rpc().borrow_mut();
    t.calls.get(&call)?.reply.as_ref()?;
    t.calls.remove(&call).and_then(|c| c.reply)
}

/// Waits for the reply of `call`.
fn finish(eng: &Engine, call: u64) -> Result<Outcome> {
    let r = eng.wait_until(|e| {
        e.rpc()
            .borrow()
            .calls
            .get(&call)
            .is_none_or(|c| c.reply.is_some())
    });
    if let Err(e) = r {
        eng.rpc().borrow_mut().calls.remove(&call);
        return Err(e);
    }
    take_reply(eng, call).ok_or(Error::Protocol {
        src: usize::MAX,
        reason: "RPC call lost",
    })
}

/// Turns an outcome into the result bytes or the caller's error.
fn outcome(dest: usize, name: &str, (st, bytes): Outcome) -> Result<Vec<u8>> {
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    let failure = match st {
        status::OK => return Ok(bytes),
        PEER_FAILED => return Err(Error::PeerFailed { rank: dest }),
        status::UNKNOWN => RpcFailure::UnknownHandler,
        status::BAD_ARGS => RpcFailure::BadArguments(text()),
        status::PANICKED => RpcFailure::Panicked(text()),
        _ => RpcFailure::Failed(text()),
    };
    Err(Error::Rpc {
        rank: dest,
        handler: name.to_string(),
        failure,
    })
}

fn encode<A: Serialize + ?Sized>(args: &A) -> Result<Vec<u8>> {
    postcard::to_allocvec(args).map_err(|_| Error::InvalidArgument {
        op: "an RPC call",
        reason: "its arguments do not serialize",
    })
}

/// Decodes a whole message: bytes left over mean that it was something else.
fn from_all_bytes<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

fn decode<R: DeserializeOwned>(dest: usize, name: &str, bytes: &[u8]) -> Result<R> {
    from_all_bytes(bytes).map_err(|e| Error::Rpc {
        rank: dest,
        handler: name.to_string(),
        failure: RpcFailure::BadResult(e),
    })
}

/// Calls handler `name` on world rank `dest` and waits for its result.
fn call_blocking<A: Serialize + ?Sized, R: DeserializeOwned>(
    eng: &Engine,
    dest: usize,
    name: &str,
    args: &A,
) -> Result<R> {
    let call = start(eng, dest, name, false, &encode(args)?)?;
    let bytes = outcome(dest, name, finish(eng, call)?)?;
    decode(dest, name, &bytes)
}

/// What a handler knows about its call, and how it calls other ranks.
///
/// Ranks here are **world** ranks, whichever communicator's endpoint the call
/// came through (unlike [`Rpc`]'s methods, which take the endpoint's ranks).
pub struct Ctx<'a> {
    eng: &'a Engine,
    src: usize,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("source", &self.src).finish()
    }
}

impl Ctx<'_> {
    /// The caller's rank in the world.
    pub fn source(&self) -> usize {
        self.src
    }

    /// Calls handler `name` on world rank `rank` and waits for its result
    /// (a nested call: this rank keeps serving meanwhile).
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        rank: usize,
        name: &str,
        args: &A,
    ) -> Result<R> {
        call_blocking(self.eng, rank, name, args)
    }

    /// Runs handler `name` on world rank `rank` without waiting for it.
    pub fn notify<A: Serialize + ?Sized>(&self, rank: usize, name: &str, args: &A) -> Result<()> {
        start(self.eng, rank, name, true, &encode(args)?).map(|_| ())
    }
}

/// A communicator's view of this process's RPC service; see the [module docs](self).
///
/// Its methods number ranks as the communicator does; the handlers it
/// registers are the process's, shared with every other endpoint (a name
/// registered again through any endpoint replaces the earlier handler).
///
/// ```
/// let world = dos::init().unwrap();
/// let dup = world.dup().unwrap();
/// world.rpc().register("who", |_ctx, ()| Ok::<_, String>("world"));
/// dup.rpc().register("who", |_ctx, ()| Ok::<_, String>("dup")); // replaces it
/// let s: String = world.rpc().call(0, "who", &()).unwrap();
/// assert_eq!(s, "dup");
/// ```
#[derive(Debug, Clone)]
pub struct Rpc {
    comm: Comm,
}

impl Comm {
    /// This communicator's RPC endpoint: ranks are this communicator's,
    /// handlers are the process's (shared by every communicator's endpoint;
    /// see [`crate::rpc`]). The first call starts the process's RPC service
    /// thread, whatever the size of the world. Not collective.
    pub fn rpc(&self) -> Rpc {
        start_service(&self.eng);
        Rpc { comm: self.clone() }
    }
}

impl Rpc {
    /// Registers `f` as handler `name` on this rank (replacing an earlier one
    /// of that name, registered through this or any other communicator's
    /// endpoint: the handlers are the process's). Its arguments `A` and result `R` travel serialized;
    /// an `Err` reaches the caller as [`RpcFailure::Failed`] with its text.
    pub fn register<A, R, E, F>(&self, name: &str, f: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        E: Display,
        F: Fn(&Ctx<'_>, A) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        self.register_bytes(name, move |ctx, bytes| {
            let args: A = match from_all_bytes(bytes) {
                Ok(a) => a,
                Err(e) => return (status::BAD_ARGS, e.into_bytes()),
            };
            match f(ctx, args) {
                Ok(r) => match postcard::to_allocvec(&r) {
                    Ok(b) => (status::OK, b),
                    Err(e) => (status::FAILED, e.to_string().into_bytes()),
                },
                Err(e) => (status::FAILED, e.to_string().into_bytes()),
            }
        });
    }

    /// Registers a handler of plain-data slices: the caller's `&[A]` arrives
    /// as is (no serialization), the `Vec<R>` returned goes back as is.
    /// Arguments whose length is not a whole number of `A` are
    /// [`RpcFailure::BadArguments`].
    pub fn register_pod<A, R, E, F>(&self, name: &str, f: F)
    where
        A: Pod,
        R: Pod,
        E: Display,
        F: Fn(&Ctx<'_>, &[A]) -> std::result::Result<Vec<R>, E> + Send + Sync + 'static,
    {
        self.register_bytes(name, move |ctx, bytes| {
            let size = std::mem::size_of::<A>();
            if (size == 0 && !bytes.is_empty()) || (size > 0 && bytes.len() % size != 0) {
                let msg = format!(
                    "{} bytes are not a whole number of {size}-byte elements",
                    bytes.len()
                );
                return (status::BAD_ARGS, msg.into_bytes());
            }
            // Copied into an aligned vector: the message's bytes need not be.
            let args: Vec<A> = pod_vec(bytes);
            match f(ctx, &args) {
                Ok(r) => (status::OK, bytemuck::cast_slice(&r).to_vec()),
                Err(e) => (status::FAILED, e.to_string().into_bytes()),
            }
        });
    }

    fn register_bytes(
        &self,
        name: &str,
        f: impl Fn(&Ctx<'_>, &[u8]) -> Outcome + Send + Sync + 'static,
    ) {
        let eng = self.comm.eng.enter();
        eng.rpc()
            .borrow_mut()
            .handlers
            .insert(wire::handler_id(name), Arc::new(f));
    }

    /// Removes handler `name`; later calls to it are [`RpcFailure::UnknownHandler`].
    pub fn unregister(&self, name: &str) {
        let eng = self.comm.eng.enter();
        eng.rpc()
            .borrow_mut()
            .handlers
            .remove(&wire::handler_id(name));
    }

    fn world_rank(&self, rank: usize) -> Result<usize> {
        self.comm.peer(rank)
    }

    /// Calls handler `name` on `rank` with `args` and waits for its result.
    ///
    /// ```
    /// let world = dos::init().unwrap();
    /// let rpc = world.rpc();
    /// rpc.register("greet", |ctx, who: String| Ok::<_, String>(format!("hello {who} from {}", ctx.source())));
    /// let s: String = rpc.call(world.rank(), "greet", "me").unwrap();
    /// assert_eq!(s, format!("hello me from {}", world.rank()));
    /// ```
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        rank: usize,
        name: &str,
        args: &A,
    ) -> Result<R> {
        // Without a `Pending`: no handle to allocate for a call waited on at once.
        let dest = self.world_rank(rank)?;
        call_blocking(&self.comm.eng.enter(), dest, name, args)
    }

    /// Starts a call; the [`Pending`] gives its result (`wait`, `test`, or
    /// `.await`). Dropping it gives the call up (its result is discarded).
    pub fn call_async<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        rank: usize,
        name: &str,
        args: &A,
    ) -> Result<Pending<R>> {
        let dest = self.world_rank(rank)?;
        let bytes = encode(args)?;
        let call = start(&self.comm.eng.enter(), dest, name, false, &bytes)?;
        Ok(Pending {
            eng: self.comm.eng.clone(),
            call,
            dest,
            name: name.to_string(),
            decode: |dest, name, b| decode(dest, name, &b),
        })
    }

    /// Calls a handler registered with [`Rpc::register_pod`]: `args` travel
    /// as their bytes and the result comes back as `R`s, no serialization.
    pub fn call_pod<A: Pod, R: Pod>(&self, rank: usize, name: &str, args: &[A]) -> Result<Vec<R>> {
        let dest = self.world_rank(rank)?;
        let eng = self.comm.eng.enter();
        let call = start(&eng, dest, name, false, bytemuck::cast_slice(args))?;
        let bytes = outcome(dest, name, finish(&eng, call)?)?;
        let size = std::mem::size_of::<R>().max(1);
        if bytes.len() % size != 0 {
            return Err(Error::Rpc {
                rank: dest,
                handler: name.to_string(),
                failure: RpcFailure::BadResult(format!(
                    "{} bytes are not a whole number of {size}-byte elements",
                    bytes.len()
                )),
            });
        }
        Ok(pod_vec(&bytes))
    }

    /// Runs handler `name` on `rank` without waiting (a one-way active
    /// message: no reply; failures on the target are not reported).
    pub fn notify<A: Serialize + ?Sized>(&self, rank: usize, name: &str, args: &A) -> Result<()> {
        let dest = self.world_rank(rank)?;
        let bytes = encode(args)?;
        start(&self.comm.eng.enter(), dest, name, true, &bytes).map(|_| ())
    }

    /// Calls handler `name` on every rank of the communicator (this one too)
    /// and returns the results in rank order, or the first error after all
    /// calls ended.
    pub fn call_all<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        name: &str,
        args: &A,
    ) -> Result<Vec<R>> {
        let pending: Vec<Result<Pending<R>>> = (0..self.comm.size())
            .map(|r| self.call_async(r, name, args))
            .collect();
        let mut out = Vec::with_capacity(pending.len());
        let mut first = None;
        for p in pending {
            match p.and_then(Pending::wait) {
                Ok(v) => out.push(v),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(out),
            Some(e) => Err(e),
        }
    }
}

/// A call in flight; see [`Rpc::call_async`].
#[must_use = "dropping a Pending gives the call up"]
pub struct Pending<R> {
    eng: Shared,
    call: u64,
    dest: usize,
    name: String,
    decode: fn(usize, &str, Vec<u8>) -> Result<R>,
}

impl<R> std::fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("rank", &self.dest)
            .field("handler", &self.name)
            .finish()
    }
}

impl<R> Pending<R> {
    /// Waits for the result.
    pub fn wait(self) -> Result<R> {
        let o = finish(&self.eng.enter(), self.call)?;
        let bytes = outcome(self.dest, &self.name, o)?;
        (self.decode)(self.dest, &self.name, bytes)
    }

    /// Makes progress once and tells whether the result is there
    /// ([`Pending::wait`] then returns at once).
    pub fn test(&self) -> bool {
        let eng = self.eng.enter();
        let arrived = |e: &Engine| {
            e.rpc()
                .borrow()
                .calls
                .get(&self.call)
                .is_none_or(|c| c.reply.is_some())
        };
        if arrived(&eng) {
            return true;
        }
        eng.progress();
        arrived(&eng)
    }
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        self.eng.enter().rpc().borrow_mut().calls.remove(&self.call);
    }
}

impl<R> Future for Pending<R> {
    type Output = Result<R>;

    /// Polling makes progress; a reply that arrives later (through the
    /// service thread or another call's progress) wakes the task.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = &*self;
        let eng = this.eng.enter();
        eng.progress();
        let reply = {
            let mut t = eng.rpc().borrow_mut();
            match t.calls.get_mut(&this.call) {
                Some(c) if c.reply.is_none() => {
                    c.waker = Some(cx.waker().clone());
                    None
                }
                Some(_) => t.calls.remove(&this.call).and_then(|c| c.reply),
                None => Some((PEER_FAILED, Vec::new())),
            }
        };
        match reply {
            None => Poll::Pending,
            Some(o) => Poll::Ready(
                outcome(this.dest, &this.name, o)
                    .and_then(|b| (this.decode)(this.dest, &this.name, b)),
            ),
        }
    }
}

// ----- the service thread -----------------------------------------------------

/// Starts the process's service thread (see [`crate::engine::entry`]), once,
/// whatever the size of the world: a rank alone also calls itself (a notify,
/// an asynchronous call) and then computes, and its handlers must run
/// meanwhile.
fn start_service(shared: &Shared) {
    shared.enter().start_service_thread();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_threads;
    use std::time::Duration;

    #[test]
    fn typed_calls_errors_and_panics_between_threads() {
        run_threads(3, |w| {
            let rpc = w.rpc();
            let me = w.rank();
            rpc.register("add", |_ctx, (a, b): (u64, u64)| Ok::<_, String>(a + b));
            rpc.register("who", move |ctx, ()| Ok::<_, String>((me, ctx.source())));
            rpc.register("fail", |_ctx, ()| Err::<(), _>("no way"));
            rpc.register("boom", |_ctx, ()| -> std::result::Result<(), String> {
                panic!("kaboom")
            });
            rpc.register_pod("sum", |_ctx, xs: &[f64]| {
                Ok::<_, String>(vec![xs.iter().sum::<f64>()])
            });
            w.barrier().unwrap();
            for r in 0..w.size() {
                let s: u64 = rpc.call(r, "add", &(r as u64, 10u64)).unwrap();
                assert_eq!(s, r as u64 + 10);
                let (at, from): (usize, usize) = rpc.call(r, "who", &()).unwrap();
                assert_eq!((at, from), (r, me));
                let e = rpc.call::<_, ()>(r, "fail", &()).unwrap_err();
                assert!(
                    matches!(&e, Error::Rpc { rank, failure: RpcFailure::Failed(m), .. } if *rank == r && m == "no way"),
                    "{e:?}"
                );
                let e = rpc.call::<_, ()>(r, "boom", &()).unwrap_err();
                assert!(
                    matches!(&e, Error::Rpc { failure: RpcFailure::Panicked(m), .. } if m.contains("kaboom")),
                    "{e:?}"
                );
                let e = rpc.call::<_, ()>(r, "nobody", &()).unwrap_err();
                assert!(
                    matches!(&e, Error::Rpc { failure: RpcFailure::UnknownHandler, handler, .. } if handler == "nobody"),
                    "{e:?}"
                );
                // Arguments of the wrong type: a string where two numbers are
                // expected, and nothing at all.
                for e in [
                    rpc.call::<_, u64>(r, "add", &"not numbers").unwrap_err(),
                    rpc.call::<_, u64>(r, "add", &()).unwrap_err(),
                ] {
                    assert!(
                        matches!(
                            &e,
                            Error::Rpc {
                                failure: RpcFailure::BadArguments(_),
                                ..
                            }
                        ),
                        "{e:?}"
                    );
                }
                // A result of another type than the handler's (three numbers
                // expected, two sent).
                let e = rpc.call::<_, (u64, u64, u64)>(r, "who", &()).unwrap_err();
                assert!(
                    matches!(
                        &e,
                        Error::Rpc {
                            failure: RpcFailure::BadResult(_),
                            ..
                        }
                    ),
                    "{e:?}"
                );
                let s: Vec<f64> = rpc.call_pod(r, "sum", &[1.5f64, 2.5, 4.0]).unwrap();
                assert_eq!(s, vec![8.0]);
                // The server still serves after all that.
                let s: u64 = rpc.call(r, "add", &(1u64, 1u64)).unwrap();
                assert_eq!(s, 2);
            }
            let all: Vec<(usize, usize)> = rpc.call_all("who", &()).unwrap();
            assert_eq!(all, (0..w.size()).map(|r| (r, me)).collect::<Vec<_>>());
            w.barrier().unwrap();
        });
    }

    #[test]
    fn messages_too_large_for_one_message_are_typed_errors() {
        run_threads(2, |w| {
            let rpc = w.rpc();
            rpc.register("big", |_ctx, n: u32| Ok::<_, String>(vec![7u8; n as usize]));
            rpc.register("len", |_ctx, v: Vec<u8>| Ok::<_, String>(v.len()));
            w.barrier().unwrap();
            let other = 1 - w.rank();
            // A result larger than a message between these ranks: the handler
            // ran, the caller learns why nothing came back.
            let e = rpc
                .call::<_, Vec<u8>>(other, "big", &(1u32 << 20))
                .unwrap_err();
            assert!(
                matches!(&e, Error::Rpc { failure: RpcFailure::Failed(m), .. } if m.contains("could not be sent")),
                "{e:?}"
            );
            // Arguments that large fail at the caller, typed, before anything is sent.
            let e = rpc
                .call::<_, usize>(other, "len", &vec![1u8; 1 << 20])
                .unwrap_err();
            assert!(
                matches!(e, Error::Transport(dos_transport::Error::TooLarge { .. })),
                "{e:?}"
            );
            // Both still serve.
            let n: usize = rpc.call(other, "len", &vec![1u8; 1000]).unwrap();
            assert_eq!(n, 1000);
            w.barrier().unwrap();
        });
    }

    #[test]
    fn a_rank_that_computes_still_answers() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let answered = AtomicBool::new(false);
        run_threads(2, |w| {
            let rpc = w.rpc();
            rpc.register("ping", |_ctx, x: u32| Ok::<_, String>(x + 1));
            w.barrier().unwrap();
            if w.rank() == 1 {
                // Away from dos until rank 0 has its answers: only the service
                // thread can give them (without it, rank 0 would wait for the
                // 10 s below and the assertion fail).
                let t0 = std::time::Instant::now();
                let mut x = 0u64;
                while !answered.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let in_time = answered.load(Ordering::SeqCst);
                w.barrier().unwrap(); // (serves rank 0 if the service did not)
                assert!(in_time, "no answer while computing");
            } else {
                for i in 0..50u32 {
                    let y: u32 = rpc.call(1, "ping", &i).unwrap();
                    assert_eq!(y, i + 1);
                }
                answered.store(true, Ordering::SeqCst);
                w.barrier().unwrap();
            }
        });
    }

    #[test]
    fn nested_calls_and_one_way_messages() {
        use std::sync::atomic::{AtomicU64, Ordering};
        run_threads(3, |w| {
            let rpc = w.rpc();
            let n = w.size();
            // "relay" on rank r asks rank r+1 for "leaf", which may call back.
            rpc.register("leaf", |ctx, x: u64| {
                Ok::<_, String>(x * 2 + ctx.source() as u64)
            });
            rpc.register("relay", move |ctx, x: u64| {
                let me = (ctx.source() + 1) % n; // the caller sent it to its neighbour
                let next = (me + 1) % n;
                ctx.call::<_, u64>(next, "leaf", &x)
                    .map_err(|e| e.to_string())
            });
            static HITS: AtomicU64 = AtomicU64::new(0);
            rpc.register("hit", |_ctx, k: u64| {
                HITS.fetch_add(k, Ordering::SeqCst);
                Ok::<_, String>(())
            });
            w.barrier().unwrap();
            let me = w.rank();
            let next = (me + 1) % n;
            let got: u64 = rpc.call(next, "relay", &5u64).unwrap();
            // leaf ran on next+1, called by `next`.
            assert_eq!(got, 10 + next as u64);
            for _ in 0..100 {
                rpc.notify(0, "hit", &1u64).unwrap();
            }
            w.barrier().unwrap();
            if me == 0 {
                // Every rank's notifications were sent before the barrier;
                // calls after them in each rank's order reach rank 0 later.
                let _: Vec<()> = rpc.call_all("hit", &0u64).unwrap();
                w.barrier().unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while HITS.load(Ordering::SeqCst) < 100 * n as u64 {
                    assert!(std::time::Instant::now() < deadline, "notifications lost");
                    w.iprobe(dos_any(), dos_any_tag()).unwrap();
                }
            } else {
                w.barrier().unwrap();
            }
            w.barrier().unwrap();
        });
    }

    fn dos_any() -> crate::Source {
        crate::ANY_SOURCE
    }
    fn dos_any_tag() -> crate::TagSel {
        crate::ANY_TAG
    }

    #[test]
    fn async_calls_complete_by_wait_test_and_await() {
        run_threads(2, |w| {
            let rpc = w.rpc();
            rpc.register("sq", |_ctx, x: u64| Ok::<_, String>(x * x));
            w.barrier().unwrap();
            let other = 1 - w.rank();
            let ps: Vec<Pending<u64>> = (0..10u64)
                .map(|i| rpc.call_async(other, "sq", &i).unwrap())
                .collect();
            for (i, p) in ps.into_iter().enumerate() {
                if i % 2 == 0 {
                    while !p.test() {}
                }
                assert_eq!(p.wait().unwrap(), (i * i) as u64);
            }
            let p = rpc.call_async::<_, u64>(other, "sq", &7u64).unwrap();
            assert_eq!(block_on(p).unwrap(), 49);
            // Given up: its reply is dropped without harm.
            drop(rpc.call_async::<_, u64>(other, "sq", &3u64).unwrap());
            w.barrier().unwrap();
        });
    }

    /// A minimal executor: polls until ready, parking in between.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park_timeout(Duration::from_micros(50));
        }
    }
}
