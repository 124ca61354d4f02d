//! The connection cap and the open-file limit it is derived from.

use super::{ConfigError, invalid};

/// The default connection cap never exceeds this, however high the open-file limit: each open
/// connection also costs memory (buffers, a task), and 16,384 is far beyond what one node serves.
pub const MAX_CONNECTIONS_CEILING: usize = 16_384;

/// File descriptors kept free of connections for everything else a node opens: the database pool
/// and SQLite's WAL files, the KEK and config files, outbound STS connections, the runtime's own.
pub fn fd_reserve(limit: u64) -> u64 {
    (limit / 4).min(128)
}

/// The connection cap when none is configured: the open-file limit minus the reserve, at most
/// [`MAX_CONNECTIONS_CEILING`]; the ceiling when the limit is unknown or unlimited.
pub fn default_max_connections(limit: Option<u64>) -> usize {
    match limit {
        Some(n) => (n.saturating_sub(fd_reserve(n)) as usize).clamp(1, MAX_CONNECTIONS_CEILING),
        None => MAX_CONNECTIONS_CEILING,
    }
}

/// Validates a configured cap against the open-file limit (a cap the limit cannot honour would
/// end in "Too many open files" instead of a clean refusal), or derives the default.
pub(super) fn max_connections(
    configured: Option<usize>,
    limit: Option<u64>,
) -> Result<usize, ConfigError> {
    let Some(v) = configured else {
        return Ok(default_max_connections(limit));
    };
    if !(1..=1_000_000).contains(&v) {
        return Err(invalid(
            "max_connections",
            format!("{v} is outside 1..=1000000"),
        ));
    }
    if let Some(n) = limit {
        let usable = n.saturating_sub(fd_reserve(n));
        if v as u64 > usable {
            return Err(invalid(
                "max_connections",
                format!(
                    "{v} is more than the open-file limit ({n}) leaves after a reserve of {} for \
                     the database and files; raise the limit (ulimit -n, systemd LimitNOFILE=) \
                     or set at most {usable}",
                    fd_reserve(n)
                ),
            ));
        }
    }
    Ok(v)
}

/// The process's soft RLIMIT_NOFILE; `None` when unlimited or unknown.
#[allow(unsafe_code)]
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned
        // local; it has no other effect.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}
