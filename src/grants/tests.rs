use super::*;

const NOW: u64 = 1_800_000_000;

fn grants() -> (tempfile::TempDir, Grants) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    (dir, Grants::new(Arc::new(store)))
}

fn authorization() -> Authorization {
    Authorization {
        client_id: "web".into(),
        subject: "818727".into(),
        scopes: vec!["read".into(), "offline_access".into()],
        resources: vec!["urn:invoices".into(), "urn:products".into()],
        auth_time: NOW,
    }
}

fn code_grant() -> CodeGrant {
    CodeGrant {
        authorization: authorization(),
        redirect_uri: "https://app.example/cb".into(),
        code_challenge: Some("challenge".into()),
        nonce: None,
    }
}

const ONE_TIME: RefreshPolicy = RefreshPolicy {
    one_time: true,
    absolute: Duration::from_secs(1000),
    sliding: Duration::from_secs(100),
    reuse_grace: Duration::ZERO,
};

#[test]
fn a_code_works_once_and_a_replay_revokes_its_family() {
    let (_dir, grants) = grants();
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .unwrap();
    let Redemption::Redeemed { grant, family } = grants.redeem_code(&code, NOW + 1).unwrap() else {
        panic!("first redemption")
    };
    assert_eq!(grant, code_grant());
    let refresh = grants
        .issue_refresh(grant.authorization, &family, ONE_TIME, NOW + 1)
        .unwrap();
    grants
        .record_access_token(&family, "jti-1", NOW + 3600)
        .unwrap();
    assert!(!grants.access_token_revoked("jti-1").unwrap());

    assert!(matches!(
        grants.redeem_code(&code, NOW + 2).unwrap(),
        Redemption::Replayed
    ));
    assert!(grants.access_token_revoked("jti-1").unwrap());
    assert_eq!(
        grants
            .use_refresh(&refresh, "web", ONE_TIME, NOW + 3)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Revoked
    );
}

#[test]
fn codes_expire_and_unknown_codes_are_unknown() {
    let (_dir, grants) = grants();
    let code = grants
        .issue_code(code_grant(), Duration::from_secs(60), NOW)
        .unwrap();
    assert!(matches!(
        grants.redeem_code(&code, NOW + 61).unwrap(),
        Redemption::Expired
    ));
    assert!(matches!(
        grants.redeem_code("nope", NOW).unwrap(),
        Redemption::Unknown
    ));
}

#[test]
fn one_time_refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (_dir, grants) = grants();
    let first = grants
        .issue_refresh(authorization(), "fam", ONE_TIME, NOW)
        .unwrap();
    let second = grants
        .use_refresh(&first, "web", ONE_TIME, NOW + 10)
        .unwrap()
        .unwrap();
    assert_ne!(second.token, first);
    assert_eq!(second.grant.authorization, authorization());
    assert_eq!(second.grant.sliding_expiry, NOW + 110);
    // Another client cannot use it.
    assert_eq!(
        grants
            .use_refresh(&second.token, "other", ONE_TIME, NOW + 11)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Unknown
    );
    // The rotated-away token again: the whole family goes.
    assert_eq!(
        grants
            .use_refresh(&first, "web", ONE_TIME, NOW + 12)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Reused
    );
    assert_eq!(
        grants
            .use_refresh(&second.token, "web", ONE_TIME, NOW + 13)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Revoked
    );
}

#[test]
fn sliding_and_absolute_lifetimes_both_end_a_refresh_token() {
    let (_dir, grants) = grants();
    let reuse = RefreshPolicy {
        one_time: false,
        ..ONE_TIME
    };
    let token = grants
        .issue_refresh(authorization(), "fam", reuse, NOW)
        .unwrap();
    // Used within each sliding window, it lives on with the same value…
    let mut at = NOW;
    for _ in 0..9 {
        at += 99;
        let used = grants
            .use_refresh(&token, "web", reuse, at)
            .unwrap()
            .unwrap();
        assert_eq!(used.token, token);
    }
    // …until the absolute lifetime ends it.
    assert_eq!(
        grants
            .use_refresh(&token, "web", reuse, NOW + 1001)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Expired
    );
    // Unused past the sliding window, it has expired.
    let idle = grants
        .issue_refresh(authorization(), "fam2", reuse, NOW)
        .unwrap();
    assert_eq!(
        grants
            .use_refresh(&idle, "web", reuse, NOW + 101)
            .unwrap()
            .unwrap_err(),
        RefreshRefusal::Expired
    );
}

#[test]
fn revocation_is_for_the_owning_client_only() {
    let (_dir, grants) = grants();
    let token = grants
        .issue_refresh(authorization(), "fam", ONE_TIME, NOW)
        .unwrap();
    assert!(!grants.revoke_refresh(&token, "other", NOW).unwrap());
    assert!(grants.refresh_grant(&token, NOW).unwrap().is_some());
    assert!(grants.revoke_refresh(&token, "web", NOW).unwrap());
    assert!(grants.refresh_grant(&token, NOW).unwrap().is_none());
}

#[test]
fn consents_are_remembered_per_subject_and_client() {
    let (_dir, grants) = grants();
    let products: BTreeSet<_> = [("read".to_owned(), "urn:products".to_owned())].into();
    let invoices: BTreeSet<_> = [("read".to_owned(), "urn:invoices".to_owned())].into();
    grants
        .remember_consent("a", "web", &products, Duration::from_secs(60), NOW)
        .unwrap();
    assert_eq!(
        grants.consent("a", "web").unwrap().unwrap().approved,
        products
    );
    // A later approval adds to the earlier one.
    grants
        .remember_consent("a", "web", &invoices, Duration::from_secs(60), NOW)
        .unwrap();
    let both: BTreeSet<_> = products.union(&invoices).cloned().collect();
    assert_eq!(grants.consent("a", "web").unwrap().unwrap().approved, both);
    assert_eq!(grants.consent("a", "other").unwrap(), None);
    assert_eq!(grants.consent("aw", "eb").unwrap(), None);
    assert_eq!(grants.sweep(NOW + 61).unwrap(), 1);
    assert_eq!(grants.consent("a", "web").unwrap(), None);
}

#[test]
fn an_access_token_recorded_in_a_revoked_family_is_revoked_at_once() {
    let (_dir, grants) = grants();
    grants.revoke_family("fam", NOW).unwrap();
    grants.record_access_token("fam", "late", NOW + 60).unwrap();
    assert!(grants.access_token_revoked("late").unwrap());
}

#[test]
fn within_the_reuse_grace_a_rotated_token_gets_a_successor_of_its_own() {
    let (_dir, grants) = grants();
    let graced = RefreshPolicy {
        reuse_grace: Duration::from_secs(30),
        ..ONE_TIME
    };
    let first = grants
        .issue_refresh(authorization(), "fam", graced, NOW)
        .unwrap();
    let a = grants
        .use_refresh(&first, "web", graced, NOW)
        .unwrap()
        .unwrap();
    // Another tab refreshes with the same token 30 s later: a token of its own, nothing revoked.
    let b = grants
        .use_refresh(&first, "web", graced, NOW + 30)
        .unwrap()
        .unwrap();
    assert_ne!(a.token, b.token);
    // Introspection sees the rotated token as spent; a use within the grace does not.
    assert!(grants.refresh_grant(&first, NOW + 30).unwrap().is_none());
    assert!(grants
        .usable_refresh(&first, graced, NOW + 30)
        .unwrap()
        .is_some());
    assert!(grants
        .usable_refresh(&first, graced, NOW + 31)
        .unwrap()
        .is_none());
    for token in [&a.token, &b.token] {
        assert!(grants.refresh_grant(token, NOW + 30).unwrap().is_some());
    }
    // Past the grace it is a reuse: the family is revoked, both successors with it.
    assert!(matches!(
        grants.use_refresh(&first, "web", graced, NOW + 31).unwrap(),
        Err(RefreshRefusal::Reused)
    ));
    for token in [&a.token, &b.token] {
        assert!(grants.refresh_grant(token, NOW + 31).unwrap().is_none());
    }
    // Without a grace, the second use is a reuse at once.
    let second = grants
        .issue_refresh(authorization(), "fam2", ONE_TIME, NOW)
        .unwrap();
    grants
        .use_refresh(&second, "web", ONE_TIME, NOW)
        .unwrap()
        .unwrap();
    assert!(matches!(
        grants.use_refresh(&second, "web", ONE_TIME, NOW).unwrap(),
        Err(RefreshRefusal::Reused)
    ));
}
