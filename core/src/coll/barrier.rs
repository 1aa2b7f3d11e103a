//! `barrier`: dissemination.

use crate::coll::tag;
use crate::{Comm, Result};

impl Comm {
    /// Blocks until every rank of the communicator has called it (`MPI_Barrier`).
    ///
    /// Dissemination algorithm: in round `k` each rank signals `rank + 2^k` and
    /// waits for `rank - 2^k`, ⌈log2 n⌉ rounds of empty messages.
    ///
    /// ```
    /// dos::testing::run_threads(3, |world| {
    ///     world.barrier().unwrap();
    /// });
    /// ```
    pub fn barrier(&self) -> Result<()> {
        if let Some(done) = self.node_barrier() {
            return done;
        }
        let (n, r) = (self.size(), self.rank());
        if n == 1 {
            // Nothing to wait for, but a barrier is a call into dos: it makes
            // progress (serves the RPC requests a rank alone sent itself).
            self.eng.enter().progress();
            return Ok(());
        }
        let mut d = 1;
        while d < n {
            let to = (r + d) % n;
            let from = (r + n - d) % n;
            self.c_sendrecv::<u8>("barrier", &[], to, &mut [], from, tag::BARRIER)?;
            d *= 2;
        }
        Ok(())
    }
}
