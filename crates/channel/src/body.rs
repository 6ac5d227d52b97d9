//! The daemon's deadline for request bodies (`http.body_timeout_secs`):
//! a body read past it fails with [`BodyTooSlow`]. Routes that read their
//! bodies themselves tell that apart from a body that broke off with
//! [`is_too_slow`], so that they count and answer it as a timeout (408).

/// Why a request body could not be read whole ([`read`]).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Longer than the route takes (answered 413).
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    /// Cut off by the daemon's deadline for bodies (408; the daemon counts
    /// it in `switchboard_http_body_timeouts_total`).
    #[error("the request body did not arrive in time")]
    TooSlow,
    /// Broke off: broken framing, a client that went away (400).
    #[error("the body could not be read: {0}")]
    Broken(String),
}

/// Reads `body` whole, at most `max` bytes; what went wrong otherwise,
/// told apart the same way on every route that reads its own body.
pub async fn read(body: axum::body::Body, max: usize) -> Result<axum::body::Bytes, ReadError> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            ReadError::TooLarge(max)
        } else if is_too_slow(&*e) {
            ReadError::TooSlow
        } else {
            ReadError::Broken(e.to_string())
        }
    })
}

/// What reading a request body fails with once the daemon's deadline for
/// it has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTooSlow;

/// True when `error`, or any error it wraps, is [`BodyTooSlow`].
pub fn is_too_slow(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTooSlow>() {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_found_under_the_errors_that_wrap_it() {
        let wrapped = axum::Error::new(axum::Error::new(BodyTooSlow));
        assert!(is_too_slow(&wrapped));
        let other = axum::Error::new(std::io::Error::other("reset"));
        assert!(!is_too_slow(&other));
    }
}
