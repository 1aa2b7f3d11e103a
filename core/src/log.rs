//! Logging: where the messages of dos and dos-transport go.
//!
//! Library code reports through the [`tracing`] facade (`tracing::warn!`,
//! `tracing::error!`), never straight to stderr: a program that installs its
//! own subscriber gets dos's messages there. A process that has none gets
//! one from [`install`], which [`crate::init`] (and every world the
//! [`crate::testing`] harness makes) and `dosrun` call: it writes one plain
//! line per message on stderr, so that the lines stay readable in dosrun's
//! tagged output, as
//!
//! ```text
//! dos-transport: rank 3: WARN tcp::connect: tcp endpoint 3: connecting to peer 1 failed (will retry): …
//! dos: ERROR world: abort: out of input
//! ```
//!
//! that is the crate (`dos`, `dos-transport`), the rank when the process is
//! one rank of a launched job, the level, the module within the crate, and
//! the message. The tunable `DOS_LOG` ([`crate::config::Config::log`],
//! default `warn`) filters them by level and module path, e.g.
//! `DOS_LOG=dos_transport::roce=debug` or `DOS_LOG=error`.
//!
//! Errors are logged once, where they are classified (a malformed message
//! dropped, a connection refused); errors returned to the caller are not
//! logged on the way.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFilter};

/// No rank: the process is not one rank of a launched job.
const NO_RANK: usize = usize::MAX;

/// The rank that [`install`]'s lines name, once a launched rank knows it.
static RANK: AtomicUsize = AtomicUsize::new(NO_RANK);

/// Installs the stderr subscriber with the filter `filter`, unless the
/// process already has a subscriber (its own, or one installed before).
/// Returns whether it installed this one.
///
/// `rank` is the process's rank in a launched job (`None` for a world of one,
/// the in-process test harness, whose threads are ranks, and `dosrun`); a
/// later call can supply it.
pub fn install(filter: LogFilter, rank: Option<usize>) -> bool {
    if let Some(r) = rank {
        RANK.store(r, Ordering::Relaxed);
    }
    // A second call (`dos::init` installs before it knows the rank, then
    // again with it) builds no subscriber only to have it refused.
    if tracing::dispatcher::has_been_set() {
        return false;
    }
    tracing::subscriber::set_global_default(subscriber(filter, std::io::stderr)).is_ok()
}

/// The subscriber [`install`] installs, writing to `out`.
fn subscriber<W>(filter: LogFilter, out: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter.as_str()))
        .with_writer(out)
        .with_ansi(false)
        .event_format(Plain)
        .finish()
}

/// [`install`] with the filter of `DOS_LOG` (the default when it does not
/// parse: whoever parses the tunables reports that) and no rank; for
/// programs such as `dosrun` that log before, or without, [`crate::init`].
pub fn install_from_env() -> bool {
    let filter = Config::from_env().unwrap_or_default().log;
    install(filter, None)
}

/// The one-line format described in the [module docs](self).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_prefix(
            &mut w,
            meta.target(),
            meta.level(),
            RANK.load(Ordering::Relaxed),
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// `crate: [rank N: ]LEVEL [module: ]` for an event of `target` (a module
/// path such as `dos_transport::tcp::connect`).
fn write_prefix(
    w: &mut impl fmt::Write,
    target: &str,
    level: &tracing::Level,
    rank: usize,
) -> fmt::Result {
    let (krate, module) = target.split_once("::").unwrap_or((target, ""));
    for part in krate.split('_').enumerate() {
        match part {
            (0, p) => w.write_str(p)?,
            (_, p) => write!(w, "-{p}")?,
        }
    }
    w.write_str(": ")?;
    if rank != NO_RANK {
        write!(w, "rank {rank}: ")?;
    }
    write!(w, "{level} ")?;
    if !module.is_empty() {
        write!(w, "{module}: ")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(target: &str, level: tracing::Level, rank: usize) -> String {
        let mut s = String::new();
        write_prefix(&mut s, target, &level, rank).unwrap();
        s
    }

    #[test]
    fn lines_name_the_crate_rank_level_and_module() {
        assert_eq!(
            prefix("dos_transport::tcp::connect", tracing::Level::WARN, 3),
            "dos-transport: rank 3: WARN tcp::connect: "
        );
        assert_eq!(
            prefix("dos::world", tracing::Level::ERROR, NO_RANK),
            "dos: ERROR world: "
        );
        assert_eq!(prefix("dos", tracing::Level::INFO, 0), "dos: rank 0: INFO ");
    }

    /// What [`install`]'s subscriber with filter `filter` writes for a
    /// warning, an error and an informational message of dos-transport's tcp.
    fn lines_with(filter: &str) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let out = buf.clone();
        let filter = Config::parse(|n| (n == "DOS_LOG").then(|| filter.to_string()))
            .unwrap()
            .log;
        tracing::subscriber::with_default(subscriber(filter, move || out.clone()), || {
            tracing::warn!(target: "dos_transport::tcp::connect", "tcp endpoint 1: rejected a connection");
            tracing::error!(target: "dos::world", "abort: {}", "no input");
            tracing::info!(target: "dos_transport::tcp::connect", "a detail");
        });
        let v = buf.0.lock().unwrap().clone();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn the_default_filter_shows_warnings_and_errors_one_line_each() {
        let rank = match RANK.load(Ordering::Relaxed) {
            NO_RANK => String::new(),
            r => format!("rank {r}: "),
        };
        assert_eq!(
            lines_with("warn"),
            format!(
                "dos-transport: {rank}WARN tcp::connect: tcp endpoint 1: rejected a connection\n\
                 dos: {rank}ERROR world: abort: no input\n"
            )
        );
    }

    #[test]
    fn dos_log_selects_by_level_and_module() {
        assert_eq!(lines_with("off"), "");
        let only_errors = lines_with("error");
        assert!(!only_errors.contains("rejected") && only_errors.contains("abort"));
        let tcp_detail = lines_with("warn,dos_transport::tcp=info");
        assert!(
            tcp_detail.contains("INFO tcp::connect: a detail"),
            "{tcp_detail}"
        );
        let quiet_transport = lines_with("warn,dos_transport=error");
        assert!(!quiet_transport.contains("rejected") && quiet_transport.contains("abort"));
    }
}
