//! Push notifications that make the git source fetch at once.
//!
//! The body is never trusted for what to serve: it only says "look now". The fetch reads
//! the remote itself, so a forged or replayed notification can at most cause one extra
//! fetch, and only if it carries a valid signature. Verified senders:
//! - GitHub: `X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of the raw body with the
//!   shared secret;
//! - GitLab: `X-Gitlab-Token: SECRET`, the secret itself.
//!
//! Comparisons are constant-time (`hmac`'s `verify_slice`, and the token through an HMAC
//! of both sides) so the secret cannot be guessed byte by byte from response times.

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

/// Largest body accepted. GitHub's push payloads for large pushes reach a few MB; beyond
/// this the request is refused before it is read whole.
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// Who sent a verified notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    GitHub,
    GitLab,
}

/// Why a notification was refused; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "no signature: expected an X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab) header"
    )]
    Unsigned,
    #[error("X-Hub-Signature-256 is not `sha256=` followed by 64 hex digits")]
    MalformedSignature,
    #[error("the signature does not match the body and the configured secret")]
    BadSignature,
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::TooLarge => 413,
            Rejection::Unsigned | Rejection::MalformedSignature | Rejection::BadSignature => 401,
        }
    }
}

/// Reading the webhook secret failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the webhook secret from {path}")]
pub struct SecretError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The webhook endpoint's logic, independent of the HTTP server that carries it.
#[derive(Debug, Clone)]
pub struct Webhook {
    secret: Arc<[u8]>,
    wake: Arc<Notify>,
}

impl Webhook {
    /// A webhook that wakes `wake` on every verified notification.
    pub fn new(secret: impl Into<Vec<u8>>, wake: Arc<Notify>) -> Webhook {
        Webhook {
            secret: Arc::from(secret.into()),
            wake,
        }
    }

    /// A webhook with the secret in `path` (a mounted Kubernetes Secret; one trailing
    /// newline, as `echo` writes it, is not part of the secret).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is empty.
    pub fn from_file(path: &Path, wake: Arc<Notify>) -> Result<Webhook, SecretError> {
        let error = |source| SecretError {
            path: path.display().to_string(),
            source,
        };
        let mut secret = std::fs::read(path).map_err(error)?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        if secret.is_empty() {
            return Err(error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            )));
        }
        Ok(Webhook::new(secret, wake))
    }

    /// Verifies a notification and, when it is genuine, wakes the source.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]; nothing is triggered then.
    pub fn receive(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<Sender, Rejection> {
        let sender = verify(&self.secret, headers, body)?;
        self.wake.notify_one();
        Ok(sender)
    }
}

/// Checks a notification's signature against `secret`.
///
/// # Errors
///
/// A [`Rejection`] saying what was wrong.
pub fn verify(secret: &[u8], headers: &http::HeaderMap, body: &[u8]) -> Result<Sender, Rejection> {
    if body.len() > MAX_BODY {
        return Err(Rejection::TooLarge);
    }
    if let Some(signature) = headers.get("x-hub-signature-256") {
        let hex = signature
            .as_bytes()
            .strip_prefix(b"sha256=")
            .ok_or(Rejection::MalformedSignature)?;
        let expected = decode_hex(hex).ok_or(Rejection::MalformedSignature)?;
        let mut mac = hmac(secret);
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map(|()| Sender::GitHub)
            .map_err(|_| Rejection::BadSignature);
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        // Equal-length-independent, constant-time: compare MACs of both under one key.
        let key = b"attache webhook token comparison";
        let mut theirs = hmac(key);
        theirs.update(token.as_bytes());
        let mut ours = hmac(key);
        ours.update(secret);
        return theirs
            .verify_slice(&ours.finalize().into_bytes())
            .map(|()| Sender::GitLab)
            .map_err(|_| Rejection::BadSignature);
    }
    Err(Rejection::Unsigned)
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` (for tests and tools).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac(secret);
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn a_github_signature_over_the_body_is_accepted() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_signature(secret, body), sig);
        let h = headers(&[("x-hub-signature-256", sig)]);
        assert_eq!(verify(secret, &h, body), Ok(Sender::GitHub));
    }

    #[test]
    fn a_wrong_github_signature_is_refused() {
        let good = github_signature(b"secret", b"body");
        let h = headers(&[("x-hub-signature-256", &good)]);
        assert_eq!(verify(b"secret", &h, b"bodx"), Err(Rejection::BadSignature));
        assert_eq!(verify(b"other", &h, b"body"), Err(Rejection::BadSignature));
        let h = headers(&[("x-hub-signature-256", "sha1=abcd")]);
        assert_eq!(
            verify(b"secret", &h, b"body"),
            Err(Rejection::MalformedSignature)
        );
        let h = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert_eq!(
            verify(b"secret", &h, b"body"),
            Err(Rejection::MalformedSignature)
        );
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        let h = headers(&[("x-gitlab-token", "s3cret")]);
        assert_eq!(verify(b"s3cret", &h, b"{}"), Ok(Sender::GitLab));
        assert_eq!(verify(b"s3cret!", &h, b"{}"), Err(Rejection::BadSignature));
        assert_eq!(verify(b"s3cre", &h, b"{}"), Err(Rejection::BadSignature));
    }

    #[test]
    fn unsigned_and_huge_bodies_are_refused_with_their_status() {
        assert_eq!(
            verify(b"s", &http::HeaderMap::new(), b"{}"),
            Err(Rejection::Unsigned)
        );
        assert_eq!(Rejection::Unsigned.status(), 401);
        let huge = vec![b'x'; MAX_BODY + 1];
        let h = headers(&[("x-gitlab-token", "s")]);
        assert_eq!(verify(b"s", &h, &huge), Err(Rejection::TooLarge));
        assert_eq!(Rejection::TooLarge.status(), 413);
    }

    #[test]
    fn only_a_verified_notification_wakes_the_source() {
        let wake = Arc::new(Notify::new());
        let hook = Webhook::new(b"k".to_vec(), wake.clone());
        let bad = headers(&[("x-gitlab-token", "nope")]);
        assert!(hook.receive(&bad, b"{}").is_err());
        use futures::FutureExt;
        assert!(
            wake.notified().now_or_never().is_none(),
            "a refused notification must not leave a wake-up pending"
        );
        let good = headers(&[("x-gitlab-token", "k")]);
        assert_eq!(hook.receive(&good, b"{}"), Ok(Sender::GitLab));
        assert!(wake.notified().now_or_never().is_some());
    }
}
