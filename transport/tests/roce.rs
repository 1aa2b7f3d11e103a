//! The transport contract over the soft-RoCE backend: endpoints on 127.0.0.1
//! talking RoCEv2 over UDP through the reliability engine.

use dos_transport::auth::Secret;
use dos_transport::contract;
use dos_transport::roce::iface::{PreparedRoce, RoceIface};

fn make(n: usize) -> Vec<RoceIface> {
    let secret = Secret::generate().unwrap();
    let preps: Vec<PreparedRoce> = (0..n)
        .map(|i| RoceIface::prepare(i, n, "127.0.0.1".parse().unwrap(), &secret).unwrap())
        .collect();
    let addrs: Vec<Vec<u8>> = preps.iter().map(|p| p.address()).collect();
    preps
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let a: Vec<Option<Vec<u8>>> =
                (0..n).map(|j| (j != i).then(|| addrs[j].clone())).collect();
            p.connect(&a).unwrap()
        })
        .collect()
}

#[test]
fn contract_roce() {
    contract::run_all(3, make);
}
