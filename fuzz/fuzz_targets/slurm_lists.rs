//! `dos::pmi::slurm`: `parse_hostlist` and `parse_tasks_per_node`, Slurm's
//! compressed lists as its environment carries them (`SLURM_JOB_NODELIST`,
//! `SLURM_TASKS_PER_NODE`).
//!
//! What parses stays within the bounds (entry count, name length), names
//! hold no list syntax, counts are at least 1, and counts written back in
//! Slurm's form parse to the same counts.
#![no_main]

use dos::pmi::slurm::{
    format_tasks_per_node, parse_hostlist, parse_tasks_per_node, MAX_HOSTS, MAX_NAME,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(hosts) = parse_hostlist(s) {
        assert!(!hosts.is_empty() && hosts.len() <= MAX_HOSTS);
        for h in &hosts {
            assert!(!h.is_empty() && h.len() <= MAX_NAME);
            assert!(!h.contains([',', '[', ']']));
        }
    }
    if let Ok(counts) = parse_tasks_per_node(s) {
        assert!(!counts.is_empty() && counts.len() <= MAX_HOSTS);
        assert!(counts.iter().all(|&c| c >= 1));
        assert_eq!(parse_tasks_per_node(&format_tasks_per_node(&counts)).unwrap(), counts);
    }
});
