//! Work requests, completions, queue pair states and statistics.

#[cfg(doc)]
use super::{Access, Qp, QpConfig};

/// A local buffer: `len` bytes at `addr` in the memory region `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    /// Key of the local memory region.
    pub key: u32,
    /// Address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Where a remote access goes: an address in the remote region `rkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    /// Key of the remote memory region.
    pub rkey: u32,
    /// Remote address of the first byte (or of the 64-bit word of an atomic).
    pub addr: u64,
}

/// What a send work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// SEND `local` into the remote's next receive buffer.
    Send {
        /// The message.
        local: Sge,
        /// Immediate data for the remote's receive completion.
        imm: Option<u32>,
    },
    /// RDMA WRITE `local` to `remote`.
    Write {
        /// The data.
        local: Sge,
        /// Where it goes.
        remote: RemoteAddr,
        /// Immediate data: the write then also consumes a remote receive buffer and
        /// makes a receive completion there.
        imm: Option<u32>,
    },
    /// RDMA READ `local.len` bytes from `remote` into `local`.
    Read {
        /// Where the data lands (needs [`Access::LOCAL_WRITE`]).
        local: Sge,
        /// What is read.
        remote: RemoteAddr,
    },
    /// Atomic compare and swap of the remote 64-bit word.
    CompareSwap {
        /// The word (8-byte aligned).
        remote: RemoteAddr,
        /// Value to compare with.
        compare: u64,
        /// Value stored on equality.
        swap: u64,
    },
    /// Atomic fetch and add on the remote 64-bit word.
    FetchAdd {
        /// The word (8-byte aligned).
        remote: RemoteAddr,
        /// Value added.
        add: u64,
    },
}

/// A send work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWr {
    /// The caller's id, returned in the completion.
    pub wr_id: u64,
    /// What to do.
    pub op: SendOp,
    /// Wait until every earlier READ and atomic of this queue pair completed before
    /// starting (IBA's fence indicator).
    pub fence: bool,
}

impl SendWr {
    /// A SEND of `local`.
    pub const fn send(wr_id: u64, local: Sge) -> SendWr {
        SendWr::new(wr_id, SendOp::Send { local, imm: None })
    }

    /// A SEND of `local` with immediate data.
    pub const fn send_imm(wr_id: u64, local: Sge, imm: u32) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Send {
                local,
                imm: Some(imm),
            },
        )
    }

    /// An RDMA WRITE of `local` to `remote`.
    pub const fn write(wr_id: u64, local: Sge, remote: RemoteAddr) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Write {
                local,
                remote,
                imm: None,
            },
        )
    }

    /// An RDMA WRITE with immediate data.
    pub const fn write_imm(wr_id: u64, local: Sge, remote: RemoteAddr, imm: u32) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::Write {
                local,
                remote,
                imm: Some(imm),
            },
        )
    }

    /// An RDMA READ of `local.len` bytes at `remote` into `local`.
    pub const fn read(wr_id: u64, local: Sge, remote: RemoteAddr) -> SendWr {
        SendWr::new(wr_id, SendOp::Read { local, remote })
    }

    /// An atomic compare and swap.
    pub const fn compare_swap(wr_id: u64, remote: RemoteAddr, compare: u64, swap: u64) -> SendWr {
        SendWr::new(
            wr_id,
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            },
        )
    }

    /// An atomic fetch and add.
    pub const fn fetch_add(wr_id: u64, remote: RemoteAddr, add: u64) -> SendWr {
        SendWr::new(wr_id, SendOp::FetchAdd { remote, add })
    }

    /// This work request with the fence indicator set.
    pub const fn fenced(mut self) -> SendWr {
        self.fence = true;
        self
    }

    const fn new(wr_id: u64, op: SendOp) -> SendWr {
        SendWr {
            wr_id,
            op,
            fence: false,
        }
    }

    /// Bytes the work request moves (8 for atomics).
    pub(super) fn len(&self) -> u32 {
        match self.op {
            SendOp::Send { local, .. }
            | SendOp::Write { local, .. }
            | SendOp::Read { local, .. } => local.len,
            SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. } => 8,
        }
    }

    pub(super) fn is_rd_atomic(&self) -> bool {
        !matches!(self.op, SendOp::Send { .. } | SendOp::Write { .. })
    }

    pub(super) fn wc_opcode(&self) -> WcOpcode {
        match self.op {
            SendOp::Send { .. } => WcOpcode::Send,
            SendOp::Write { .. } => WcOpcode::RdmaWrite,
            SendOp::Read { .. } => WcOpcode::RdmaRead,
            SendOp::CompareSwap { .. } => WcOpcode::CompareSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
        }
    }
}

/// A receive work request: a buffer for one incoming SEND (or for the completion of an
/// incoming RDMA WRITE with immediate data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWr {
    /// The caller's id, returned in the completion.
    pub wr_id: u64,
    /// The buffer (needs [`Access::LOCAL_WRITE`]).
    pub sge: Sge,
}

/// Why a work request was not posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The send queue (with the unpolled send completions) is at its depth.
    #[error("send queue full")]
    SendQueueFull,
    /// The receive queue (with the unpolled receive completions) is at its depth.
    #[error("receive queue full")]
    RecvQueueFull,
    /// The message is longer than the queue pair carries ([`QpConfig::max_msg_len`]).
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Requested length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An atomic on an address that is not 8-byte aligned.
    #[error("atomic on an address that is not 8-byte aligned")]
    Misaligned,
    /// The queue pair is in the error state.
    #[error("queue pair in the error state")]
    QpInError,
}

/// How a work request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WcStatus {
    /// Done.
    Success,
    /// Retransmissions without progress exhausted the retry budget.
    RetryExceeded,
    /// RNR NAKs without progress exhausted the RNR budget.
    RnrRetryExceeded,
    /// The remote rejected the access (key, bounds or rights).
    RemoteAccessError,
    /// The remote rejected the request as invalid (or its receive buffer was too small).
    RemoteInvalidRequest,
    /// The remote could not complete the request.
    RemoteOperationalError,
    /// A local buffer was not accessible (key, bounds or `LOCAL_WRITE`).
    LocalProtectionError,
    /// An incoming SEND did not fit this receive buffer.
    LocalLengthError,
    /// The remote's response did not fit the request (length, opcode).
    BadResponse,
    /// The queue pair entered the error state before this work request completed.
    Flushed,
}

/// What a completed work request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WcOpcode {
    /// A SEND this side posted.
    Send,
    /// An RDMA WRITE this side posted.
    RdmaWrite,
    /// An RDMA READ this side posted.
    RdmaRead,
    /// A compare and swap this side posted.
    CompareSwap,
    /// A fetch and add this side posted.
    FetchAdd,
    /// A receive buffer that an incoming SEND filled.
    Recv,
    /// A receive buffer consumed by an incoming RDMA WRITE with immediate data.
    RecvRdmaWithImm,
}

impl WcOpcode {
    /// Whether this completes a receive work request (as opposed to a send one).
    pub const fn is_recv(self) -> bool {
        matches!(self, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm)
    }
}

/// A work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Completion {
    /// The work request's id.
    pub wr_id: u64,
    /// How it ended.
    pub status: WcStatus,
    /// What it was.
    pub opcode: WcOpcode,
    /// Bytes moved (on success): the message length; for a receive, the bytes
    /// received, or the RDMA WRITE's length with immediate data; 8 for atomics.
    pub byte_len: u32,
    /// Immediate data of a receive completion.
    pub imm: Option<u32>,
    /// The remote word's value before an atomic (on success).
    pub atomic_orig: Option<u64>,
}

/// The state of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// Connected and working (IBA's RTS).
    Ready,
    /// Failed: work requests flushed, nothing more sent (see the module docs).
    Error,
}

/// Counters of a queue pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QpStats {
    /// Datagrams produced by [`Qp::poll_transmit`].
    pub tx_packets: u64,
    /// Request packets sent again (PSN already sent before).
    pub tx_retransmits: u64,
    /// ACK packets sent (coalesced acknowledgements, not NAKs).
    pub tx_acks: u64,
    /// Datagrams that decoded and were for this queue pair.
    pub rx_packets: u64,
    /// Datagrams dropped for a bad ICRC (corrupted).
    pub rx_icrc_errors: u64,
    /// Datagrams dropped because they did not decode otherwise.
    pub rx_malformed: u64,
    /// Datagrams dropped for a wrong authentication tag (forged, or of another
    /// connection; [`Qp::set_packet_keys`]).
    pub rx_auth_failures: u64,
    /// Datagrams for another queue pair number.
    pub rx_wrong_qp: u64,
    /// Duplicate request packets (PSN before the expected one).
    pub rx_duplicates: u64,
    /// Request packets after the expected PSN (dropped).
    pub rx_out_of_sequence: u64,
    /// Responses that acknowledged nothing new or were outside the PSNs in flight.
    pub rx_stale_responses: u64,
    /// Requests dropped because the response queue was full.
    pub rx_busy_drops: u64,
    /// Datagrams dropped in the error state.
    pub rx_dropped_in_error: u64,
    /// PSN sequence error NAKs sent.
    pub seq_naks_sent: u64,
    /// PSN sequence error NAKs received.
    pub seq_naks_received: u64,
    /// RNR NAKs sent.
    pub rnr_naks_sent: u64,
    /// RNR NAKs received.
    pub rnr_naks_received: u64,
    /// Retransmission timer expiries with something outstanding.
    pub timeouts: u64,
    /// Go-backs to the oldest unacknowledged PSN (any cause).
    pub go_backs: u64,
    /// Duplicate READs served again.
    pub read_replays: u64,
    /// Duplicate atomics answered from the saved result.
    pub atomic_replays: u64,
}
