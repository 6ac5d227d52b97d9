//! Small checks on the addresses adapters send to, and URLs shown
//! without their secrets.

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use std::net::{IpAddr, SocketAddr};

/// The client's address, as its allowances are kept
/// ([`client_key`](crate::limits::client_key)): the peer's, or behind a
/// proxy on this host (a loopback peer) the last `X-Forwarded-For` hop
/// (of the last such header: the one the proxy added or extended).
/// `None` when the server does not tell the peer (no per-address limit
/// then). On a dual-stack listener (`[::]:8080`) an IPv4 peer arrives as
/// `::ffff:a.b.c.d`: a proxy at `127.0.0.1` is loopback all the same.
pub fn client_ip(headers: &HeaderMap, ext: &Extensions) -> Option<IpAddr> {
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())?;
    if peer.is_loopback()
        && let Some(forwarded) = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return Some(crate::limits::client_key(forwarded));
    }
    Some(crate::limits::client_key(peer))
}

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

/// `url` with any password replaced by `***`, for logs: the user info's
/// (`redis://user:pw@host`) and a `unix://` URL's `pass` parameter
/// (`unix:///run/redis.sock?pass=pw`).
pub fn redact_url(url: &str) -> String {
    // The user info ends at the last '@': a password written without
    // percent-encoding may hold '?', '/' or '#' too (one with '?' was
    // printed whole). When what comes before that '@' could also be a
    // query (it holds '?' or '='), all of it is hidden, user included: an
    // '@' in a query value (`?pass=a@b`) must not show the rest.
    let (head, rest) = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let scheme = &url[..scheme_end + 3];
            let head = if userinfo.contains(['?', '=']) {
                format!("{scheme}***")
            } else {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}{user}:***")
            };
            (head, &url[at..])
        }
        // No scheme: whatever comes before an '@' may be a password.
        (None, Some(at)) => ("***".to_owned(), &url[at..]),
        _ => (String::new(), url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut out = head + base;
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                // The key as the client reads it: percent-decoded.
                Some((key, _)) if decoded(key).eq_ignore_ascii_case("pass") => {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `url` as [`redact_url`] shows it, and with every value of its query as
/// `***` too: for the URLs of other services (a webhook's `?token=…`, a
/// callback's key), whose parameters are not known.
pub fn redact_url_all(url: &str) -> String {
    without_query_values(&redact_url(url))
}

/// A URL's query with every value as `***` (`?token=***&db=***`), and its
/// fragment dropped; any other text as it is.
fn without_query_values(value: &str) -> String {
    let Some((base, query)) = value
        .contains("://")
        .then(|| value.split_once('?'))
        .flatten()
    else {
        return value.to_owned();
    };
    let query = query.split('#').next().unwrap_or("");
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            // A bare value (`?s3cret`) may be the secret itself.
            None if param.is_empty() => String::new(),
            None => "***".to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// `%XX` escapes decoded (an undecodable one is kept as it is).
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::{client_ip, is_loopback_host};
    use axum::extract::ConnectInfo;
    use axum::http::{Extensions, HeaderMap};
    use std::net::SocketAddr;

    /// Behind a proxy on this host the client is the last forwarded hop,
    /// also when a dual-stack listener sees the proxy as `::ffff:127.0.0.1`;
    /// a peer that is not loopback cannot claim another address.
    #[test]
    fn a_proxy_on_this_host_is_seen_through_on_a_dual_stack_listener() {
        let ip_of = |peer: &str, forwarded: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(f) = forwarded {
                headers.insert("x-forwarded-for", f.parse().unwrap());
            }
            let mut ext = Extensions::new();
            ext.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            client_ip(&headers, &ext).unwrap().to_string()
        };
        let via = Some("203.0.113.9, 198.51.100.7");
        assert_eq!(ip_of("127.0.0.1:5000", via), "198.51.100.7");
        assert_eq!(ip_of("[::ffff:127.0.0.1]:5000", via), "198.51.100.7");
        assert_eq!(ip_of("[::ffff:198.51.100.8]:5000", via), "198.51.100.8");
        assert_eq!(ip_of("[::ffff:127.0.0.1]:5000", None), "127.0.0.1");
    }

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
