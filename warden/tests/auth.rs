//! API tokens: format, hashed storage, verification, scopes, the first admin token
//! file and the failed-authentication limiter.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use clawrden_warden::auth::{
    authenticate, authorize, constant_time_eq, create_token, ensure_admin_token, generate_token,
    hash_token, verify_token, AuthError, FailedAuthLimiter, Identity, Scope, ADMIN_TOKEN_FILE,
    TOKEN_PREFIX,
};
use clawrden_warden::store::{Store, StoreError, Timestamp};

#[path = "common/tempdir.rs"]
#[allow(dead_code)] // each test crate uses part of the shared helper
mod tempdir;
use tempdir::TempDir;

#[test]
fn scopes_are_ordered_read_approve_admin() {
    use Scope::*;
    let table = [
        (Read, Read, true),
        (Read, Approve, false),
        (Read, Admin, false),
        (Approve, Read, true),
        (Approve, Approve, true),
        (Approve, Admin, false),
        (Admin, Read, true),
        (Admin, Approve, true),
        (Admin, Admin, true),
    ];
    for (have, need, ok) in table {
        assert_eq!(have.allows(need), ok, "{have} allows {need}");
    }
    assert_eq!("approve".parse::<Scope>(), Ok(Approve));
    assert_eq!(
        "root".parse::<Scope>(),
        Err("unknown scope \"root\"; expected read, approve or admin".to_owned())
    );
}

#[test]
fn tokens_are_prefixed_hex_and_random() {
    let a = generate_token().unwrap();
    let b = generate_token().unwrap();
    let text = a.expose();
    assert_eq!(text.len(), TOKEN_PREFIX.len() + 64);
    assert!(text.starts_with("clwd_"));
    assert!(text[5..]
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_ne!(a, b);
    assert_eq!(format!("{a:?}"), "TokenSecret(<redacted>)");
}

#[test]
fn hash_is_sha256_hex() {
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn constant_time_eq_compares_whole_strings() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abcd", b"abcd"));
    assert!(!constant_time_eq(b"abcd", b"abce"));
    assert!(!constant_time_eq(b"xbcd", b"abcd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
}

#[test]
fn created_token_verifies_and_only_its_hash_is_stored() {
    let dir = TempDir::tagged("create");
    let store = Store::open(dir.path()).unwrap();
    let (record, secret) = create_token(&store, "ci-bot", Scope::Approve, Timestamp(1)).unwrap();
    assert_eq!(record.hash, hash_token(secret.expose()));
    assert_eq!(
        verify_token(&store, secret.expose(), Timestamp(5)).unwrap(),
        Identity {
            token_id: record.id,
            name: "ci-bot".into(),
            scope: Scope::Approve
        }
    );
    assert_eq!(
        store.get_token("ci-bot").unwrap().unwrap().last_used_at,
        Some(Timestamp(5))
    );
    drop(store);
    // The clear token is nowhere in the database files.
    for name in ["state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            assert!(
                !bytes
                    .windows(secret.expose().len())
                    .any(|w| w == secret.expose().as_bytes()),
                "token found in {name}"
            );
        }
    }
}

#[test]
fn unknown_malformed_and_revoked_tokens_are_rejected() {
    let dir = TempDir::tagged("reject");
    let store = Store::open(dir.path()).unwrap();
    let (_, secret) = create_token(&store, "old", Scope::Admin, Timestamp(1)).unwrap();
    let other = generate_token().unwrap();
    for bad in [
        other.expose(),
        "",
        "clwd_",
        "Bearer x",
        &secret.expose()[..secret.expose().len() - 1],
        &secret.expose().to_uppercase(),
    ] {
        let err = verify_token(&store, bad, Timestamp(2)).unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken), "{bad:?}: {err:?}");
        assert_eq!(
            err.to_string(),
            "invalid API token; send a token created with `clawctl token create` as \
             `Authorization: Bearer <token>`"
        );
    }
    assert!(store.revoke_token("old", Timestamp(3)).unwrap());
    let err = verify_token(&store, secret.expose(), Timestamp(4)).unwrap_err();
    assert!(
        matches!(&err, AuthError::Revoked { name } if name == "old"),
        "{err:?}"
    );
    assert!(!err.to_string().contains(secret.expose()));
    assert_eq!(store.get_token("old").unwrap().unwrap().last_used_at, None);
}

#[test]
fn token_names_are_validated_and_unique() {
    let dir = TempDir::tagged("names");
    let store = Store::open(dir.path()).unwrap();
    for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
        let err = create_token(&store, bad, Scope::Read, Timestamp(1)).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidTokenName { name } if name == bad),
            "{err:?}"
        );
    }
    create_token(&store, "dash-board_1.0", Scope::Read, Timestamp(1)).unwrap();
    let err = create_token(&store, "dash-board_1.0", Scope::Read, Timestamp(2)).unwrap_err();
    assert!(
        matches!(err, AuthError::Store(StoreError::TokenNameTaken { .. })),
        "{err:?}"
    );
}

#[test]
fn authorize_checks_scope() {
    let reader = Identity {
        token_id: 1,
        name: "viewer".into(),
        scope: Scope::Read,
    };
    assert!(authorize(&reader, Scope::Read).is_ok());
    let err = authorize(&reader, Scope::Approve).unwrap_err();
    assert!(
        matches!(
            &err,
            AuthError::Forbidden { name, scope: Scope::Read, required: Scope::Approve }
                if name == "viewer"
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "token \"viewer\" has scope read, this needs approve"
    );
}

#[test]
fn first_start_writes_admin_token_file_0600_once() {
    let dir = TempDir::tagged("admin");
    let store = Store::open(dir.path()).unwrap();
    let path = ensure_admin_token(&store, dir.path(), Timestamp(1))
        .unwrap()
        .expect("first start writes the admin token");
    assert_eq!(path, dir.path().join(ADMIN_TOKEN_FILE));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let content = std::fs::read_to_string(&path).unwrap();
    let token = content.strip_suffix('\n').expect("one line");
    let who = verify_token(&store, token, Timestamp(2)).unwrap();
    assert_eq!((who.name.as_str(), who.scope), ("admin", Scope::Admin));
    // Second start: nothing new, the file is untouched.
    assert_eq!(
        ensure_admin_token(&store, dir.path(), Timestamp(3)).unwrap(),
        None
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    assert_eq!(store.token_count().unwrap(), 1);
}

#[test]
fn admin_token_is_not_recreated_once_any_token_exists() {
    let dir = TempDir::tagged("admin-revoked");
    let store = Store::open(dir.path()).unwrap();
    let path = ensure_admin_token(&store, dir.path(), Timestamp(1))
        .unwrap()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    store.revoke_token("admin", Timestamp(2)).unwrap();
    // Revoking every token does not hand out a new admin token on restart.
    assert_eq!(
        ensure_admin_token(&store, dir.path(), Timestamp(3)).unwrap(),
        None
    );
    assert!(!path.exists());
}

#[test]
fn stale_admin_token_file_from_an_old_database_is_replaced() {
    let dir = TempDir::tagged("admin-stale");
    let path = dir.path().join(ADMIN_TOKEN_FILE);
    std::fs::write(&path, "clwd_stale\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(dir.path()).unwrap();
    ensure_admin_token(&store, dir.path(), Timestamp(1))
        .unwrap()
        .unwrap();
    let content = std::fs::read_to_string(&path).unwrap();
    assert_ne!(content, "clwd_stale\n");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    verify_token(&store, content.trim_end(), Timestamp(2)).unwrap();
}

#[test]
fn limiter_rejects_after_n_failures_until_the_window_passes() {
    let limiter = FailedAuthLimiter::new(3, Duration::from_secs(60), 100);
    let t0 = Instant::now();
    for i in 0..3 {
        limiter
            .check("10.0.0.1", t0 + Duration::from_secs(i))
            .unwrap();
        limiter.record_failure("10.0.0.1", t0 + Duration::from_secs(i));
    }
    let err = limiter
        .check("10.0.0.1", t0 + Duration::from_secs(10))
        .unwrap_err();
    match &err {
        AuthError::RateLimited {
            client,
            retry_after,
        } => {
            assert_eq!(client, "10.0.0.1");
            assert_eq!(*retry_after, Duration::from_secs(50));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "too many failed authentications from 10.0.0.1; try again in 50s"
    );
    // Another client is unaffected.
    limiter
        .check("10.0.0.2", t0 + Duration::from_secs(10))
        .unwrap();
    // The oldest failure leaves the window at t0+60s.
    assert!(limiter
        .check("10.0.0.1", t0 + Duration::from_millis(59_999))
        .is_err());
    limiter
        .check("10.0.0.1", t0 + Duration::from_secs(60))
        .unwrap();
}

#[test]
fn limited_client_gets_429_for_bad_tokens_but_still_gets_in_with_a_valid_one() {
    let dir = TempDir::tagged("limited");
    let store = Store::open(dir.path()).unwrap();
    let (_, good) = create_token(&store, "ok", Scope::Read, Timestamp(1)).unwrap();
    let limiter = FailedAuthLimiter::new(2, Duration::from_secs(60), 100);
    let t0 = Instant::now();
    let bad = generate_token().unwrap();
    let attempt = |token: &str, secs: u64| {
        authenticate(
            &store,
            &limiter,
            "peer",
            token,
            Timestamp(secs as i64),
            t0 + Duration::from_secs(secs),
        )
    };
    // A success does not reset the failure count.
    assert!(matches!(
        attempt(bad.expose(), 0),
        Err(AuthError::InvalidToken)
    ));
    assert_eq!(attempt(good.expose(), 1).unwrap().name, "ok");
    assert!(matches!(
        attempt(bad.expose(), 2),
        Err(AuthError::InvalidToken)
    ));
    let err = attempt(bad.expose(), 3).unwrap_err();
    assert!(matches!(err, AuthError::RateLimited { .. }), "{err:?}");
    // A process sharing the address cannot lock the holder of a valid token out.
    assert_eq!(attempt(good.expose(), 4).unwrap().name, "ok");
    assert_eq!(
        store.get_token("ok").unwrap().unwrap().last_used_at,
        Some(Timestamp(4))
    );
    let err = attempt(bad.expose(), 5).unwrap_err();
    assert!(matches!(err, AuthError::RateLimited { .. }), "{err:?}");
    assert!(matches!(
        attempt(bad.expose(), 61),
        Err(AuthError::InvalidToken)
    ));
}

#[test]
fn limiter_memory_is_bounded() {
    let limiter = FailedAuthLimiter::new(1, Duration::from_secs(60), 2);
    let t0 = Instant::now();
    limiter.record_failure("a", t0);
    limiter.record_failure("b", t0 + Duration::from_secs(1));
    limiter.record_failure("c", t0 + Duration::from_secs(2));
    assert_eq!(limiter.tracked_clients(), 2);
    // "a" had the stalest failure and was forgotten.
    limiter.check("a", t0 + Duration::from_secs(3)).unwrap();
    assert!(limiter.check("b", t0 + Duration::from_secs(3)).is_err());
    assert!(limiter.check("c", t0 + Duration::from_secs(3)).is_err());
    let dbg = format!("{limiter:?}");
    assert_eq!(
        dbg,
        "FailedAuthLimiter { max_failures: 1, window: 60s, tracked_clients: 2 }"
    );
}
