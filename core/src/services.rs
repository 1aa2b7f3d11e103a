//! The services registered with the engine, in one list: the engine calls
//! their hooks in this order and knows none of them by name (see
//! [`crate::engine::am`] for the table of active-message ids, and
//! ARCHITECTURE.md, "Module rules"). A new service (I/O, checkpointing)
//! declares its `static` [`Service`] in its own module and joins the list.

use crate::engine::am::Service;

/// Every service, in the order of their hooks.
pub(crate) static ALL: &[&Service] = &[
    &crate::rma::target::SERVICE,
    &crate::rpc::SERVICE,
    &crate::coll::nonblocking::SERVICE,
    &crate::coll::node::SERVICE,
    &crate::io::nb::SERVICE,
];
