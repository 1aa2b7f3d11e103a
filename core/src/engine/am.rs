//! The table of active-message ids, and how services register with the engine.
//!
//! Every active message carries a one-byte id. The ids are split into blocks,
//! one per protocol, here and nowhere else; a service registers the ids of its
//! block (with the handler that decodes them) through a [`Service`], listed
//! once in [`crate::services`]. The engine names no service: it dispatches the
//! point-to-point protocol's ids directly (that protocol sits beside the
//! engine, in [`crate::p2p`], and is its hot path), and every other id through
//! the handler table that the registered services filled.
//!
//! | ids | block | messages | handled in |
//! | --- | --- | --- | --- |
//! | 0 | reserved | never sent | |
//! | 1..=15 | [`P2P`] | 1 EAGER, 2 RTS, 3 FIN, 4 CTS, 5 DATA, 6 BYE, 7 PUTCTS, 8 DONE (`p2p/wire.rs`) | `p2p/eager.rs` (EAGER), `p2p/rendezvous.rs` (RTS, FIN, CTS, DATA, PUTCTS, DONE), `engine/dispatch.rs` (BYE) |
//! | 16..=31 | [`RMA`] | 16 PUT … 29 ACCV (`rma/wire.rs`) | `rma/target.rs` (`on_am`) |
//! | 32..=47 | [`RPC`] | 32 REQ, 33 REP, 34 BATCH (`rpc/wire.rs`) | `rpc/mod.rs` (`on_am`) |
//! | 48..=63 | [`IO`] | 48 LOCK, 49 UNLOCK, 50 GRANT: the file lock of atomic mode (`io/lock.rs`) | `io/lock.rs` (`on_am`) |
//! | 64..=79 | [`CKPT`] | reserved for checkpointing | |
//! | 80..=255 | free | | |
//!
//! Collectives and DSM send no active messages of their own: collectives
//! travel as point-to-point messages on internal tags (the nonblocking ones
//! register progress and abandon hooks), and DSM works through RMA and RPC.
//!
//! A new service takes a free block (add a row and a constant here), declares
//! a `static` [`Service`] in its own module, and adds it to
//! [`crate::services::ALL`].

use std::any::Any;
use std::cell::{Cell, OnceCell};

use dos_transport::AmId;

use super::{Engine, ReqId};
use crate::Result;

/// A block of active-message ids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    /// First id of the block.
    pub(crate) first: AmId,
    /// Last id of the block.
    pub(crate) last: AmId,
}

impl Ids {
    /// Whether `other` lies inside this block.
    pub(crate) const fn holds(self, other: Ids) -> bool {
        other.first >= self.first && other.last <= self.last && other.first <= other.last
    }
}

/// The point-to-point protocol (matched by the engine's dispatch itself).
pub(crate) const P2P: Ids = Ids { first: 1, last: 15 };
/// One-sided operations (`rma`).
pub(crate) const RMA: Ids = Ids {
    first: 16,
    last: 31,
};
/// Remote procedure calls (`rpc`).
pub(crate) const RPC: Ids = Ids {
    first: 32,
    last: 47,
};
/// The file-system client (`io`): the file lock of atomic mode.
#[allow(dead_code)] // io/nb.rs registers its ids (48..=50) inside this block
pub(crate) const IO: Ids = Ids {
    first: 48,
    last: 63,
};
/// Reserved for checkpointing (`ckpt`).
#[allow(dead_code)] // reserved: no checkpoint service yet
pub(crate) const CKPT: Ids = Ids {
    first: 64,
    last: 79,
};

/// The top bit of a send token (`Event::SendDone`) marks a body lent by a
/// service (not by a request): its completion goes to the services'
/// [`Hooks::send_done`]. Request loans never set it.
pub(crate) const SERVICE_TOKEN: u64 = 1 << 63;

/// Handles one active message of a service: world rank of the sender, id, data.
pub(crate) type AmHandler = fn(&Engine, usize, AmId, &[u8]) -> Result<()>;

/// What the engine calls a service for, besides its active messages. Every
/// hook runs on the thread that drives the engine, inside it, and only once
/// the service has state (it has been used on this rank).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hooks {
    /// Before the transports are polled (send what the service gathered),
    /// and when the engine finalizes.
    pub(crate) flush: Option<fn(&Engine)>,
    /// After the transports were polled and queued sends handed over: run
    /// the service's work outside the transports' callbacks; returns how
    /// many events that made.
    pub(crate) serve: Option<fn(&Engine) -> usize>,
    /// A peer (world rank) broke its connection without saying goodbye.
    pub(crate) peer_failed: Option<fn(&Engine, usize)>,
    /// Request `id` is given up (its wait failed): forget every reference
    /// to it and to its buffers.
    pub(crate) abandon: Option<fn(&Engine, ReqId)>,
    /// A transport stopped reading a body the service lent it (a token with
    /// [`SERVICE_TOKEN`] set).
    pub(crate) send_done: Option<fn(&Engine, u64)>,
}

impl Hooks {
    /// No hooks.
    pub(crate) const NONE: Hooks = Hooks {
        flush: None,
        serve: None,
        peer_failed: None,
        abandon: None,
        send_done: None,
    };
}

/// A service as it registers with the engine.
#[derive(Debug)]
pub(crate) struct Service {
    /// Its name (for diagnostics).
    pub(crate) name: &'static str,
    /// Its active-message ids (inside its block of the table) and their
    /// handler, if it has any.
    pub(crate) am: Option<(Ids, AmHandler)>,
    /// Its per-engine state, made on first use ([`Engine::service`]).
    pub(crate) state: fn() -> Box<dyn Any>,
    /// Its hooks.
    pub(crate) hooks: Hooks,
}

/// The services registered with one engine: their handlers by id, and their
/// state.
pub(crate) struct Registry {
    services: &'static [&'static Service],
    /// Handler of every active-message id outside the p2p block.
    handlers: Box<[Option<AmHandler>; 256]>,
    /// State of each service, made when it is first used.
    states: Box<[OnceCell<Box<dyn Any>>]>,
    /// Bit `i`: service `i` has state (so its hooks run).
    live: Cell<u32>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.services.iter().map(|s| s.name).collect();
        f.debug_struct("Registry")
            .field("services", &names)
            .field("live", &self.live.get())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of `services`.
    ///
    /// # Panics
    /// If two services claim the same id, or an id of the p2p block (a
    /// mistake in the table above, caught by the first engine any test makes).
    pub(crate) fn new(services: &'static [&'static Service]) -> Registry {
        assert!(services.len() <= 32, "at most 32 services");
        let mut handlers = Box::new([None; 256]);
        for s in services {
            let Some((ids, h)) = s.am else { continue };
            assert!(
                ids.first <= ids.last && ids.first > P2P.last,
                "service {} claims ids {ids:?} of the p2p block",
                s.name
            );
            for id in ids.first..=ids.last {
                let slot: &mut Option<AmHandler> = &mut handlers[id as usize];
                assert!(slot.is_none(), "active-message id {id} registered twice");
                *slot = Some(h);
            }
        }
        Registry {
            services,
            handlers,
            states: services.iter().map(|_| OnceCell::new()).collect(),
            live: Cell::new(0),
        }
    }

    /// The handler registered for `id`, if any.
    #[inline]
    pub(crate) fn handler(&self, id: AmId) -> Option<AmHandler> {
        self.handlers[id as usize]
    }

    /// The services that have state, and their hooks, in registration order.
    #[inline]
    fn live_hooks(&self) -> impl Iterator<Item = &'static Hooks> + '_ {
        let live = self.live.get();
        self.services
            .iter()
            .enumerate()
            .filter(move |(i, _)| live & (1 << i) != 0)
            .map(|(_, s)| &s.hooks)
    }
}

impl Engine {
    /// The state of `service` on this engine, made on first use. `T` is the
    /// type its [`Service::state`] makes.
    ///
    /// # Panics
    /// If `service` is not registered or `T` is not its state's type (a
    /// programming error).
    #[inline]
    pub(crate) fn service<T: 'static>(&self, service: &'static Service) -> &T {
        let reg = &self.services;
        let i = reg
            .services
            .iter()
            .position(|s| std::ptr::eq(*s, service))
            .expect("the service is registered in crate::services::ALL");
        let st = reg.states[i].get_or_init(|| {
            reg.live.set(reg.live.get() | 1 << i);
            (service.state)()
        });
        st.downcast_ref::<T>()
            .expect("a service's state has the type its `state` makes")
    }

    /// Whether any registered service has state (and so hooks to run).
    #[inline]
    pub(crate) fn services_live(&self) -> bool {
        self.services.live.get() != 0
    }

    /// Runs the flush hooks of the services in use.
    #[inline(never)]
    pub(crate) fn services_flush(&self) {
        for h in self.services.live_hooks() {
            if let Some(f) = h.flush {
                f(self);
            }
        }
    }

    /// Runs the serve hooks of the services in use; returns their events.
    #[inline(never)]
    pub(crate) fn services_serve(&self) -> usize {
        let mut n = 0;
        for h in self.services.live_hooks() {
            if let Some(f) = h.serve {
                n += f(self);
            }
        }
        n
    }

    /// Tells the services in use that `peer` failed.
    #[cold]
    pub(crate) fn services_peer_failed(&self, peer: usize) {
        for h in self.services.live_hooks() {
            if let Some(f) = h.peer_failed {
                f(self, peer);
            }
        }
    }

    /// Tells the services in use that request `id` is given up.
    #[cold]
    pub(crate) fn services_abandon(&self, id: ReqId) {
        for h in self.services.live_hooks() {
            if let Some(f) = h.abandon {
                f(self, id);
            }
        }
    }

    /// Hands the completion of a service's loan (`token`) to the services.
    #[cold]
    pub(crate) fn services_send_done(&self, token: u64) {
        for h in self.services.live_hooks() {
            if let Some(f) = h.send_done {
                f(self, token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocks_do_not_overlap() {
        let blocks = [P2P, RMA, RPC, IO, CKPT];
        for (i, a) in blocks.iter().enumerate() {
            assert!(a.first <= a.last && a.first > 0);
            for b in &blocks[i + 1..] {
                assert!(a.last < b.first, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn every_registered_service_stays_in_one_block() {
        let blocks = [RMA, RPC, IO, CKPT];
        for s in crate::services::ALL {
            if let Some((ids, _)) = s.am {
                assert!(
                    blocks.iter().any(|b| b.holds(ids)),
                    "{}: ids {ids:?} outside every block",
                    s.name
                );
            }
        }
        // Building the registry checks that no id is claimed twice.
        let reg = Registry::new(crate::services::ALL);
        assert!(reg.handler(crate::p2p::wire::AM_EAGER).is_none());
    }
}
