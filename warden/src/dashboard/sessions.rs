//! Dashboard sessions: a random id in an HttpOnly cookie, mapped in memory to the token
//! the person logged in with.
//!
//! The session keeps the token (never logged, redacted in `Debug`) rather than a copy of
//! its identity so that every request re-verifies it: revoking a token ends its dashboard
//! sessions at once, and the token's `last_used_at` stays true. The map is keyed by the
//! SHA-256 of the cookie value, so the live cookie values themselves are not kept.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

use crate::auth::Identity;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "clawrden_session";
/// How long a session lives after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many live sessions; a new login past it evicts the oldest one.
pub const MAX_SESSIONS: usize = 256;
/// Random bytes in a session id.
const SESSION_ID_BYTES: usize = 32;

/// A token kept for re-verification; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// Wraps a token that was just verified.
    pub fn new(token: &str) -> SessionToken {
        SessionToken(token.to_owned())
    }

    /// The token text, for [`crate::control::ControlPlane::authenticate`].
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// One logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who logged in, as verified at login (re-verified on every request).
    pub identity: Identity,
    pub token: SessionToken,
    /// `scheme://host[:port]` the login came from; state changes must come from it too.
    pub origin: String,
    pub created: Instant,
    pub expires: Instant,
}

/// The live sessions of this warden process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn key(id: &str) -> String {
    crate::store::hex(&Sha256::digest(id.as_bytes()))
}

/// A fresh session id: 32 bytes from /dev/urandom in lowercase hex.
pub fn new_session_id() -> std::io::Result<String> {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::store::hex(&bytes))
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Plain data; a panic elsewhere cannot leave it half-updated.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `session` under `id`, first dropping expired sessions and, when the map is
    /// still full, the oldest one.
    pub fn insert(&self, id: &str, session: Session, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(key(id), session);
    }

    /// The live session with this id, if any (an expired one is removed).
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let k = key(id);
        match map.get(&k) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id; whether there was one.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(&key(id)).is_some()
    }

    /// Number of sessions held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sessions of this process. Global so that the API's auth extractor can reach them
/// from a header map alone, whatever state type its router carries.
pub fn sessions() -> &'static Sessions {
    static SESSIONS: OnceLock<Sessions> = OnceLock::new();
    SESSIONS.get_or_init(Sessions::default)
}

/// The value of the `clawrden_session` cookie, if the request carries one that looks
/// like a session id (64 lowercase hex digits).
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((name, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == COOKIE_NAME
                && v.len() == 2 * SESSION_ID_BYTES
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// The `scheme://host[:port]` a request was addressed to: `https` only when a trusted
/// proxy says so with `X-Forwarded-Proto` (the warden itself serves plain HTTP), the
/// authority from `Host` (or a trusted `X-Forwarded-Host`). `None` without a usable host.
pub fn request_origin(headers: &HeaderMap, trust_proxy: bool) -> Option<String> {
    let first = |name: &str| -> Option<String> {
        let v = headers.get(name)?.to_str().ok()?;
        let v = v.split(',').next()?.trim();
        (!v.is_empty()).then(|| v.to_owned())
    };
    let secure =
        trust_proxy && first("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = if trust_proxy {
        first("x-forwarded-host").or_else(|| first("host"))
    } else {
        first("host")
    }?;
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !host_ok {
        return None;
    }
    let scheme = if secure { "https" } else { "http" };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// Whether a state-changing request comes from `expected` (`scheme://host[:port]`): its
/// `Origin` header must equal it, or, without `Origin`, its `Referer` must be a URL on
/// it. A request with neither is refused: browsers send `Origin` with every POST, PUT
/// and DELETE, so only a forged or stripped request lacks both.
pub fn check_origin(headers: &HeaderMap, expected: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(expected));
    }
    if let Some(referer) = headers.get(header::REFERER) {
        return referer.to_str().is_ok_and(|r| {
            r.len() > expected.len()
                && r[..expected.len()].eq_ignore_ascii_case(expected)
                && r.as_bytes()[expected.len()] == b'/'
        });
    }
    false
}

/// `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let mut c = format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> String {
    let mut c = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn session(now: Instant, ttl: Duration) -> Session {
        Session {
            identity: Identity {
                token_id: 1,
                name: "alice".into(),
                scope: Scope::Approve,
            },
            token: SessionToken::new("clwd_x"),
            origin: "http://127.0.0.1:8080".into(),
            created: now,
            expires: now + ttl,
        }
    }

    #[test]
    fn session_ids_are_64_hex_digits_and_differ() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn expired_session_is_not_returned_and_is_dropped() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert("a", session(now, Duration::from_secs(10)), now);
        assert_eq!(s.get("a", now).unwrap().identity.name, "alice");
        assert!(s.get("a", now + Duration::from_secs(10)).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn full_map_evicts_the_oldest_session() {
        let s = Sessions::default();
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS {
            let at = t0 + Duration::from_millis(i as u64);
            s.insert(&format!("id{i}"), session(at, SESSION_TTL), at);
        }
        let late = t0 + Duration::from_secs(1);
        s.insert("new", session(late, SESSION_TTL), late);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get("id0", late).is_none());
        assert!(s.get("id1", late).is_some());
        assert!(s.get("new", late).is_some());
    }

    #[test]
    fn remove_ends_a_session() {
        let s = Sessions::default();
        let now = Instant::now();
        s.insert("a", session(now, SESSION_TTL), now);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert!(s.get("a", now).is_none());
    }

    #[test]
    fn session_cookie_is_found_among_others_and_must_be_hex() {
        let id = "ab".repeat(32);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; clawrden_session={id}; y=2")).unwrap(),
        );
        assert_eq!(session_cookie(&h), Some(id));
        let h = headers(&[("cookie", "clawrden_session=not-an-id")]);
        assert_eq!(session_cookie(&h), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn origin_is_http_unless_a_trusted_proxy_says_https() {
        let h = headers(&[
            ("host", "Warden.example:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ]);
        assert_eq!(
            request_origin(&h, false).as_deref(),
            Some("http://warden.example:8080")
        );
        assert_eq!(
            request_origin(&h, true).as_deref(),
            Some("https://public.example")
        );
        assert_eq!(request_origin(&headers(&[("host", "a/b")]), false), None);
        assert_eq!(request_origin(&HeaderMap::new(), false), None);
    }

    #[test]
    fn check_origin_accepts_same_origin_only() {
        let me = "http://127.0.0.1:8080";
        assert!(check_origin(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            me
        ));
        assert!(!check_origin(
            &headers(&[("origin", "http://evil.example")]),
            me
        ));
        assert!(!check_origin(&headers(&[("origin", "null")]), me));
        // Origin wins over a matching Referer.
        assert!(!check_origin(
            &headers(&[
                ("origin", "http://evil.example"),
                ("referer", "http://127.0.0.1:8080/")
            ]),
            me
        ));
        assert!(check_origin(
            &headers(&[("referer", "http://127.0.0.1:8080/#/queue")]),
            me
        ));
        // A longer port that shares the prefix is another origin.
        assert!(!check_origin(
            &headers(&[("referer", "http://127.0.0.1:80801/")]),
            me
        ));
        assert!(!check_origin(&HeaderMap::new(), me));
    }

    #[test]
    fn cookies_are_httponly_strict_and_secure_only_behind_tls() {
        let c = set_cookie("abc", false);
        assert_eq!(
            c,
            "clawrden_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"
        );
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert_eq!(
            clear_cookie(false),
            "clawrden_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let s = session(Instant::now(), SESSION_TTL);
        assert!(!format!("{s:?}").contains("clwd_x"));
    }
}
