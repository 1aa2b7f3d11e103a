//! Dispatch of every incoming transport event: active messages by id (the
//! point-to-point protocol's directly, every other id through the table of
//! [`super::am`]), placed payloads, finished loans, and broken connections.

use dos_transport::Event;

use super::Engine;
use crate::p2p::wire::{AM_BYE, AM_CTS, AM_DATA, AM_DONE, AM_EAGER, AM_FIN, AM_PUTCTS, AM_RTS};
use crate::Error;

impl Engine {
    /// Handles one event of a transport whose indices map to world ranks by `world`.
    pub(crate) fn on_event(&self, ev: Event<'_>, world: &[u32]) {
        let rank = |i: usize| world.get(i).map_or(usize::MAX, |&r| r as usize);
        let (src, id, data) = match ev {
            Event::Am { src, id, data } => (rank(src), id, data),
            Event::Placed { src, .. } => return self.on_placed(rank(src)),
            Event::Disconnected { peer } => return self.on_disconnect(rank(peer)),
            Event::SendDone { token, .. } => return self.on_send_done(token),
        };
        let r = match id {
            AM_EAGER => self.on_eager(src, data),
            AM_RTS => self.on_rts(src, data),
            AM_FIN => self.on_fin(src, data),
            AM_CTS => self.on_cts(src, data),
            AM_DATA => self.on_data(src, data),
            AM_PUTCTS => self.on_putcts(src, data),
            AM_DONE => self.on_done(src, data),
            AM_BYE => {
                self.st.borrow_mut().departed.push(src);
                Ok(())
            }
            // Every other id: the service that registered it (see `am`).
            _ => match self.services.handler(id) {
                Some(handle) => handle(self, src, id, data),
                None => Err(Error::Protocol {
                    src,
                    reason: "unknown active message id",
                }),
            },
        };
        if let Err(e) = r {
            protocol_error(e);
        }
    }

    /// Records a broken peer; every wait from now on fails naming it.
    #[cold]
    pub(crate) fn on_disconnect(&self, peer: usize) {
        {
            let mut st = self.st.borrow_mut();
            // A message being placed will not be finished: stop its writes.
            st.placing.retain(|(s, _)| *s != peer);
            if st.departed.contains(&peer) {
                return;
            }
            if st.failed.is_none() {
                st.failed = Some(peer);
            }
        }
        if self.services_live() {
            self.services_peer_failed(peer);
        }
    }
}

#[cold]
pub(crate) fn protocol_error(e: Error) {
    // Classified here, once: a malformed message from a peer is dropped.
    eprintln!("dos: dropped a message: {e}");
}
