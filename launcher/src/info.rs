//! `dosrun --info`: transports, their capabilities, and the tunables.

use std::fmt::Write as _;
use std::sync::Arc;

use dos::config::{Config, TUNABLES};
use dos_transport::loopback::Loopback;
use dos_transport::shm::{Segment, ShmIface};
use dos_transport::tcp::TcpIface;
use dos_transport::{Caps, Iface};

fn caps_line(c: &Caps) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "active messages: {} (max {} B, inline up to {} B); rma: {}; zero-copy put: {}; atomics: {}; across nodes: {}",
        yes(c.am),
        c.max_am,
        c.max_inline,
        yes(c.rma),
        yes(c.put_zc),
        yes(c.atomics),
        yes(c.inter_node)
    )
}

/// The RDMA devices of this host, as the kernel lists them.
fn rdma_devices() -> Vec<String> {
    std::fs::read_dir("/sys/class/infiniband")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Why ranks on this host cannot use verbs, if they cannot.
pub fn verbs_unavailable() -> Option<String> {
    if !cfg!(feature = "verbs") {
        return Some("this dosrun was built without the verbs backend (feature verbs)".into());
    }
    #[cfg(feature = "verbs")]
    if dos_transport::verbs::devices().is_empty() {
        return Some("this host has no RDMA device".into());
    }
    if rdma_devices().is_empty() {
        return Some(
            "this host has no RDMA device (/sys/class/infiniband is empty or missing)".into(),
        );
    }
    None
}

/// What `--info` says of RDMA devices (the verbs backend needs one).
fn verbs_line() -> String {
    let devs = rdma_devices();
    if devs.is_empty() {
        "no RDMA device on this host (/sys/class/infiniband is empty or missing): jobs use the other transports".to_string()
    } else {
        format!(
            "RDMA devices: {} (the verbs backend is not built yet)",
            devs.join(", ")
        )
    }
}

/// The text `dosrun --info` prints, reading tunables through `lookup`.
pub fn render(lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "dosrun {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s);
    let _ = writeln!(s, "Transports:");
    let shm_caps = Config::parse(&lookup)
        .ok()
        .and_then(|c| Segment::create(2, c.shm_ring_bytes).ok())
        .and_then(|seg| ShmIface::new(Arc::new(seg), 0).ok())
        .map(|i| caps_line(&i.caps()));
    let _ = writeln!(
        s,
        "  shm       shared memory within a node: lock-free rings in a memfd segment, single-copy large transfers via CMA"
    );
    if let Some(c) = shm_caps {
        let _ = writeln!(s, "            {c}");
    }
    let _ = writeln!(s, "  loopback  a rank sending to itself");
    let _ = writeln!(s, "            {}", caps_line(&Loopback::new().caps()));
    let _ = writeln!(
        s,
        "  tcp       between nodes: one authenticated connection per pair of ranks, zero-copy sends and puts"
    );
    let _ = writeln!(
        s,
        "            {}",
        caps_line(&TcpIface::caps_with(dos_transport::tcp::DEFAULT_MAX_AM))
    );
    let _ = writeln!(
        s,
        "  roce      userspace soft-RoCE (RoCEv2 over UDP, GSO/GRO trains, one RC queue pair per peer): between hosts with --transports shm,roce"
    );
    let _ = writeln!(
        s,
        "            {}",
        caps_line(&dos_transport::roce::iface::RoceIface::caps_with(
            dos_transport::roce::iface::DEFAULT_MAX_AM
        ))
    );
    let _ = writeln!(s, "  verbs     {}", verbs_line());
    let _ = writeln!(s);
    let v = hwlocality::hwloc_api_version();
    let _ = writeln!(
        s,
        "Binding: hwloc (API {}.{}.{}); --bind-to core|numa|none; dosrun --topology shows this machine",
        v >> 16,
        (v >> 8) & 0xff,
        v & 0xff
    );
    let _ = writeln!(s, "{}", crate::slurm::launch_line(&lookup));
    let _ = writeln!(s);
    let _ = writeln!(s, "Tunables (environment variables):");
    for t in TUNABLES {
        let (value, origin) = match lookup(t.name) {
            Some(v) => (v, "set"),
            None => (t.default.to_string(), "default"),
        };
        let _ = writeln!(s, "  {} = {} ({})", t.name, value, origin);
        let _ = writeln!(s, "      {}", t.help);
    }
    if let Err(e) = Config::parse(&lookup) {
        let _ = writeln!(s);
        let _ = writeln!(s, "warning: {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_transports_and_every_tunable() {
        let text = render(|n| (n == "DOS_EAGER_LIMIT").then(|| "999".to_string()));
        assert!(text.contains("  shm "));
        assert!(text.contains("  loopback "));
        assert!(
            text.contains("  tcp ") && text.contains("zero-copy put: yes"),
            "{text}"
        );
        assert!(text.contains("  verbs "), "{text}");
        assert!(text.contains("Binding: hwloc (API 2."), "{text}");
        assert!(text.contains("\nLaunch: ssh "), "{text}");
        for t in TUNABLES {
            assert!(text.contains(t.name), "{}", t.name);
        }
        assert!(text.contains("DOS_EAGER_LIMIT = 999 (set)"));
        assert!(text.contains("DOS_KILL_GRACE_MS = 200 (default)"));
        let bad = render(|n| (n == "DOS_SHM_RING_BYTES").then(|| "7".to_string()));
        assert!(bad.contains("warning:"));
    }
}
