//! The daemon's deadline for request bodies (`http.body_timeout_secs`):
//! a body read past it fails with [`BodyTooSlow`]. Routes that read their
//! bodies themselves tell that apart from a body that broke off with
//! [`is_too_slow`], so that they count and answer it as a timeout (408).

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
