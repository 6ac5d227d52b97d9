//! The open-file limit, and from it how many HTTP connections to keep.
//!
//! Every chat widget and agent console holds a websocket, a file
//! descriptor each. systemd (since v240) starts services with a soft limit
//! of 1,024 open files and a far higher hard one, and expects a program
//! that needs more to raise its own soft limit, as Go's runtime does for
//! every program: so the daemon raises it to the hard limit at start.
//!
//! The HTTP server then keeps [`RESERVED_FILES`] descriptors (a quarter of
//! a limit under 4,096) out of its reach, for Redis, mail, outbound HTTP
//! and files: a flood of connections
//! gets a `503` (`http.max_connections`) rather than leaving the instance
//! unable to reconnect to Redis (`EMFILE`).
//!
//! rustix reads and sets the limit with `prlimit64`, which the unit's
//! `SystemCallFilter=@system-service` allows (only `setrlimit` is in the
//! `@resources` group it denies).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors the HTTP server leaves to everything else.
pub const RESERVED_FILES: u64 = 1024;

/// Raises the soft open-file limit to the hard one and returns the soft
/// limit in force afterwards (`None`: unlimited or unknown).
pub fn raise_open_files() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        ) {
            Ok(()) => return Some(maximum),
            Err(error) => {
                tracing::warn!(%error, current, maximum, "Could not raise the open-file limit.");
            }
        }
    }
    limit.current
}

/// How many HTTP connections to serve at once: `configured` when it is not
/// 0, else what `open_files` leaves after [`RESERVED_FILES`], or after a
/// quarter of a small limit.
pub fn http_connections(configured: u64, open_files: Option<u64>) -> u64 {
    if configured > 0 {
        return configured;
    }
    match open_files {
        Some(files) => files - RESERVED_FILES.min(files / 4),
        // Unlimited: a figure no machine reaches, so the limit never bites.
        None => u64::from(u32::MAX),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_everything_else() {
        assert_eq!(http_connections(500, Some(100_000)), 500, "as configured");
        assert_eq!(http_connections(0, Some(20_000)), 20_000 - RESERVED_FILES);
        assert_eq!(http_connections(0, Some(4_096)), 4_096 - RESERVED_FILES);
        assert_eq!(
            http_connections(0, Some(1_024)),
            768,
            "a quarter of a small limit"
        );
        assert_eq!(http_connections(0, Some(0)), 0);
        assert_eq!(http_connections(0, None), u64::from(u32::MAX));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        // Lowered first (allowed without privileges), as systemd's 1,024
        // would be, so that the raise has something to do.
        let before = getrlimit(Resource::Nofile);
        let hard = before.maximum.expect("a hard open-file limit");
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard.min(512)),
                maximum: Some(hard),
            },
        )
        .unwrap();
        let open = raise_open_files();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(open, limit.current);
        assert_eq!(limit.current, Some(hard), "soft limit raised");
    }
}
