//! Node agents: how dosrun runs the ranks of the hosts other than its own.
//!
//! Two programs take part, one on each end of a control connection:
//!
//! * [`pool`] is dosrun's side, on the launching host: it starts one agent
//!   per remote node through the launch agent (ssh), accepts and
//!   authenticates their control connections, sends each its node's
//!   assignment, and watches their heartbeats (the supervisor reads what
//!   they report).
//! * [`node`] is the agent itself, `dosrun --agent`, on a remote host: it
//!   joins dosrun, starts its node's ranks (the same start-up as dosrun's
//!   own ranks, [`crate::start`]), serves their wire-up socket, and relays
//!   their output, exits and fences to dosrun.
//!
//! Between them: [`wire`], the frames of the control protocol, and [`ctl`],
//! one end of an authenticated control connection with its buffers (and
//! the bootstrap line dosrun writes on the agent's stdin).

pub mod ctl;
pub mod node;
pub mod pool;
pub mod wire;
