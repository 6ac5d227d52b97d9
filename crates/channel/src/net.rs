//! Small checks on the addresses adapters send to.

use std::net::IpAddr;

/// Whether `host` (a URL's host, an IPv6 address in brackets or not) is this
/// machine: `localhost`, `127.0.0.0/8`, `::1` (names under `localhost` are
/// not: the resolver need not keep them on loopback). Plain
/// `http://` to such a host never leaves the machine, so it is accepted
/// where a remote one needs TLS.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "crm.example.com",
            "localhost.example.com",
            "crm.localhost",
            "notlocalhost",
            "10.0.0.1",
            "169.254.169.254",
            "[::2]",
            "0.0.0.0",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
