//! The network backends' [`Bringup`]: prepare, address, connect, each
//! delegating to the backend's own typed steps, so that a caller choosing the
//! backend at run time (core's transport selector) drives them all alike.

use std::net::IpAddr;
use std::time::Duration;

use crate::auth::Secret;
use crate::roce::iface::{PreparedRoce, RoceIface};
use crate::tcp::TcpIface;
#[cfg(feature = "verbs")]
use crate::verbs::VerbsIface;
use crate::{Bringup, Result, Transport};

/// What a tcp endpoint needs to [`Bringup::prepare`].
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// The address peers reach this endpoint at (a port is chosen by the system).
    pub ip: IpAddr,
    /// The job secret every connection authenticates with.
    pub secret: Secret,
}

impl Bringup for crate::tcp::Prepared {
    type Options = TcpOptions;
    type Iface = TcpIface;
    fn prepare(index: usize, npeers: usize, o: &TcpOptions) -> Result<Self> {
        TcpIface::prepare(index, npeers, o.ip, &o.secret)
    }
    fn address(&self) -> Vec<u8> {
        crate::tcp::Prepared::address(self)
    }
    fn connect(self, addrs: &[Option<Vec<u8>>], timeout: Duration) -> Result<TcpIface> {
        crate::tcp::Prepared::connect(self, addrs, timeout)
    }
}

/// What a soft-RoCE endpoint needs to [`Bringup::prepare`] (see
/// [`PreparedRoce`]'s `with_*` methods for the meaning of each).
#[derive(Debug, Clone)]
pub struct RoceOptions {
    /// The address peers reach this endpoint at.
    pub ip: IpAddr,
    /// The job secret (initial PSNs, packet authentication).
    pub secret: Secret,
    /// Largest RoCE MTU ([`PreparedRoce::with_max_mtu`]).
    pub max_mtu: u32,
    /// UDP segmentation offload ([`PreparedRoce::with_segmentation`]).
    pub segmentation: bool,
    /// How long a connection retransmits without progress; `None`: the
    /// backend's default ([`PreparedRoce::with_retry_budget`]).
    pub retry_budget: Option<Duration>,
    /// Authenticated packets ([`PreparedRoce::with_packet_auth`]).
    pub packet_auth: bool,
}

impl Bringup for PreparedRoce {
    type Options = RoceOptions;
    type Iface = RoceIface;
    fn prepare(index: usize, npeers: usize, o: &RoceOptions) -> Result<Self> {
        let p = RoceIface::prepare(index, npeers, o.ip, &o.secret)?
            .with_max_mtu(o.max_mtu)?
            .with_segmentation(o.segmentation)
            .with_packet_auth(o.packet_auth);
        match o.retry_budget {
            Some(t) => p.with_retry_budget(t),
            None => Ok(p),
        }
    }
    fn address(&self) -> Vec<u8> {
        PreparedRoce::address(self)
    }
    fn connect(self, addrs: &[Option<Vec<u8>>], _timeout: Duration) -> Result<RoceIface> {
        PreparedRoce::connect(self, addrs)
    }
}

/// What a verbs endpoint needs to [`Bringup::prepare`] (feature `verbs`).
#[cfg(feature = "verbs")]
#[derive(Debug, Clone, Default)]
pub struct VerbsOptions {
    /// The RDMA device by name; `None`: the first one.
    pub device: Option<String>,
}

#[cfg(feature = "verbs")]
impl Bringup for crate::verbs::Prepared {
    type Options = VerbsOptions;
    type Iface = VerbsIface;
    fn prepare(index: usize, npeers: usize, o: &VerbsOptions) -> Result<Self> {
        crate::verbs::VerbsBuilder::open(o.device.as_deref())?.prepare(index, npeers)
    }
    fn address(&self) -> Vec<u8> {
        crate::verbs::Prepared::address(self)
    }
    fn connect(self, addrs: &[Option<Vec<u8>>], _timeout: Duration) -> Result<VerbsIface> {
        crate::verbs::Prepared::connect(self, addrs)
    }
    /// Queue pairs are ready only once every rank connected: the device
    /// retries unready peers only briefly.
    fn barrier_after_connect(&self) -> bool {
        true
    }
}

impl From<TcpIface> for Transport {
    fn from(t: TcpIface) -> Transport {
        Transport::Tcp(t)
    }
}

impl From<RoceIface> for Transport {
    fn from(r: RoceIface) -> Transport {
        Transport::Roce(r)
    }
}

#[cfg(feature = "verbs")]
impl From<VerbsIface> for Transport {
    fn from(v: VerbsIface) -> Transport {
        Transport::Verbs(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActiveMessages, Event, Iface, PreparedNet, Progress};
    use std::net::Ipv4Addr;

    /// Two endpoints of `B` brought up through [`PreparedNet`] trait objects,
    /// as a selector does, exchange a message.
    fn pair<B: Bringup + Send + 'static>(o: &B::Options) {
        let p: Vec<Box<dyn PreparedNet>> = (0..2)
            .map(|i| Box::new(B::prepare(i, 2, o).unwrap()) as Box<dyn PreparedNet>)
            .collect();
        assert!(!p[0].barrier_after_connect());
        let addrs: Vec<Vec<u8>> = p.iter().map(|p| p.address()).collect();
        let ts: Vec<Transport> = std::thread::scope(|s| {
            let hs: Vec<_> = p
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let a: Vec<Option<Vec<u8>>> =
                        (0..2).map(|q| (q != i).then(|| addrs[q].clone())).collect();
                    s.spawn(move || p.connect(&a, Duration::from_secs(20)).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(ts[0].index(), 0);
        ts[0].am_send(1, 5, b"he", b"llo").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            ts[0].progress(|_| {});
            ts[1].progress(|ev| {
                if let Event::Am { src, id, data } = ev {
                    got = Some((src, id, data.to_vec()));
                }
            });
        }
        assert_eq!(got, Some((0, 5, b"hello".to_vec())));
    }

    #[test]
    fn tcp_comes_up_through_the_bringup_trait() {
        let secret = Secret::generate().unwrap();
        pair::<crate::tcp::Prepared>(&TcpOptions {
            ip: Ipv4Addr::LOCALHOST.into(),
            secret,
        });
    }

    #[test]
    fn roce_comes_up_through_the_bringup_trait() {
        let secret = Secret::generate().unwrap();
        pair::<PreparedRoce>(&RoceOptions {
            ip: Ipv4Addr::LOCALHOST.into(),
            secret,
            max_mtu: 4096,
            segmentation: true,
            retry_budget: Some(Duration::from_secs(5)),
            packet_auth: true,
        });
    }
}
