use super::*;
use crate::jwt::Alg;
use serde_json::json;

const URL: &str = "https://api.example.com/invoices/42";
const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

fn expected(access_token: Option<&str>) -> Expected<'_> {
    Expected {
        method: "GET",
        url: URL,
        access_token,
        key: None,
        now: NOW,
        max_age: Duration::from_secs(60),
        skew: Duration::from_secs(30),
    }
}

fn claims(key_iat: u64) -> Value {
    json!({"jti": crate::protocol::random_b64::<16>(), "htm": "GET", "htu": URL, "iat": key_iat, "ath": ath(TOKEN)})
}

fn key() -> ProofKey {
    ProofKey::generate(Alg::ES256).unwrap()
}

/// `claims` changed by `change`, signed by `key` with its own header.
fn with(key: &ProofKey, change: impl FnOnce(&mut Value)) -> String {
    let mut c = claims(NOW);
    change(&mut c);
    key.sign(&key.header(), &c)
}

fn header_with(key: &ProofKey, change: impl FnOnce(&mut Value)) -> String {
    let mut h = key.header();
    change(&mut h);
    key.sign(&h, &claims(NOW))
}

fn refused(proof: &str) -> ProofError {
    check(proof, &expected(Some(TOKEN)), &Replay::default()).unwrap_err()
}

#[test]
fn a_proof_of_every_algorithm_yields_its_key_thumbprint() {
    for alg in Alg::ALL {
        let key = ProofKey::generate(alg).unwrap();
        let proof = key.proof("GET", URL, Some(TOKEN), NOW);
        let thumbprint = check(&proof, &expected(Some(TOKEN)), &Replay::default())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(thumbprint, key.thumbprint(), "{alg}");
        assert_eq!(thumbprint.len(), 43);
    }
}

/// RFC 7638 §3.1's example key and thumbprint.
#[test]
fn the_thumbprint_is_rfc_7638s() {
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .unwrap();
    assert_eq!(
        thumbprint(&jwk).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn the_header_is_checked() {
    let k = key();
    assert_eq!(
        refused(&header_with(&k, |h| h["typ"] = json!("JWT"))),
        ProofError::Typ
    );
    assert_eq!(
        refused(&header_with(&k, |h| h["typ"] = json!(null))),
        ProofError::Typ
    );
    for alg in ["none", "HS256", "ES512", "es256"] {
        assert_eq!(
            refused(&header_with(&k, |h| h["alg"] = json!(alg))),
            ProofError::Alg,
            "{alg}"
        );
    }
    // A key of another type than the algorithm.
    assert_eq!(
        refused(&header_with(&k, |h| h["alg"] = json!("RS256"))),
        ProofError::Key
    );
    assert_eq!(
        refused(&header_with(&k, |h| h["jwk"]["d"] = json!("c2VjcmV0"))),
        ProofError::PrivateKey
    );
    assert_eq!(
        refused(&header_with(&k, |h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"}))),
        ProofError::PrivateKey
    );
    assert_eq!(
        refused(&header_with(&k, |h| h["jwk"]["x"] = json!("AAAA"))),
        ProofError::Key
    );
    assert!(matches!(
        refused(&header_with(&k, |h| h["crit"] = json!(["exp"]))),
        ProofError::Malformed(_)
    ));
    assert!(matches!(
        refused(&header_with(&k, |h| h
            .as_object_mut()
            .unwrap()
            .remove("jwk")
            .map(drop)
            .unwrap())),
        ProofError::Malformed(_)
    ));
}

#[test]
fn the_signature_must_be_the_jwks() {
    let (mine, theirs) = (key(), key());
    // Signed by another key than the one in the header.
    let forged = theirs.sign(&mine.header(), &claims(NOW));
    assert_eq!(refused(&forged), ProofError::Signature);
    let good = mine.proof("GET", URL, Some(TOKEN), NOW);
    let (input, _) = good.rsplit_once('.').unwrap();
    assert_eq!(refused(&format!("{input}.AAAA")), ProofError::Signature);
}

#[test]
fn the_request_must_be_this_one() {
    let k = key();
    assert_eq!(
        refused(&with(&k, |c| c["htm"] = json!("POST"))),
        ProofError::Method
    );
    assert_eq!(
        refused(&with(&k, |c| c["htm"] = json!("get"))),
        ProofError::Method
    );
    for htu in [
        "https://api.example.com/invoices/43",
        "https://api.example.com/invoices/42?a=1",
        "https://api.example.com/invoices/42#f",
        "https://other.example.com/invoices/42",
        "http://api.example.com/invoices/42",
        "https://api.example.com:8443/invoices/42",
        "/invoices/42",
    ] {
        assert_eq!(
            refused(&with(&k, |c| c["htu"] = json!(htu))),
            ProofError::Url,
            "{htu}"
        );
    }
    // The same URL written otherwise (RFC 3986 §6.2.2, §6.2.3).
    for htu in [
        "HTTPS://API.example.com/invoices/42",
        "https://api.example.com:443/invoices/42",
        "https://api.example.com/invoices/./42",
        "https://api.example.com/x/../invoices/42",
        "https://api.example.com/%69nvoices/42",
    ] {
        let proof = with(&k, |c| c["htu"] = json!(htu));
        check(&proof, &expected(Some(TOKEN)), &Replay::default())
            .unwrap_or_else(|e| panic!("{htu}: {e}"));
    }
}

#[test]
fn iat_is_within_max_age_and_skew() {
    let k = key();
    let at = |iat: u64| {
        check(
            &with(&k, |c| c["iat"] = json!(iat)),
            &expected(Some(TOKEN)),
            &Replay::default(),
        )
    };
    // 60 s old plus 30 s of skew is the oldest; 30 s ahead the furthest.
    at(NOW - 90).unwrap();
    assert_eq!(at(NOW - 91), Err(ProofError::Old));
    at(NOW + 30).unwrap();
    assert_eq!(at(NOW + 31), Err(ProofError::Future));
    for bad in [json!("1800000000"), json!(1.8e9), json!(-1), json!(null)] {
        assert!(
            matches!(
                refused(&with(&k, |c| c["iat"] = bad.clone())),
                ProofError::Malformed(_)
            ),
            "{bad}"
        );
    }
}

#[test]
fn ath_is_the_tokens_hash_where_a_token_is_presented() {
    let k = key();
    assert_eq!(
        refused(&with(&k, |c| c["ath"] = json!(ath("another")))),
        ProofError::Ath
    );
    let no_ath = with(&k, |c| {
        c.as_object_mut().unwrap().remove("ath");
    });
    assert_eq!(refused(&no_ath), ProofError::Ath);
    // At the token endpoint no token is presented, and no ath needed.
    check(&no_ath, &expected(None), &Replay::default()).unwrap();
}

#[test]
fn a_jti_counts_once() {
    let (k, replay) = (key(), Replay::default());
    let proof = k.proof("GET", URL, Some(TOKEN), NOW);
    check(&proof, &expected(Some(TOKEN)), &replay).unwrap();
    assert_eq!(
        check(&proof, &expected(Some(TOKEN)), &replay),
        Err(ProofError::Replayed)
    );
    // A refused proof is not recorded: its jti may still come with a good one.
    let jti = "fixed-jti";
    let bad = with(&k, |c| {
        c["jti"] = json!(jti);
        c["htm"] = json!("PUT");
    });
    assert_eq!(
        check(&bad, &expected(Some(TOKEN)), &replay),
        Err(ProofError::Method)
    );
    check(
        &with(&k, |c| c["jti"] = json!(jti)),
        &expected(Some(TOKEN)),
        &replay,
    )
    .unwrap();
    for bad in [json!(""), json!("x".repeat(257)), json!(7), json!(null)] {
        assert!(matches!(
            refused(&with(&k, |c| c["jti"] = bad.clone())),
            ProofError::Malformed(_)
        ));
    }
}

#[test]
fn malformed_proofs_are_refused_with_a_reason() {
    let k = key();
    let good = k.proof("GET", URL, Some(TOKEN), NOW);
    let (h, rest) = good.split_once('.').unwrap();
    let long = format!("{h}.{}", "A".repeat(MAX_PROOF_LEN));
    for bad in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        &long,
        &format!("{h}.{rest}.x"),
        // An array where an object belongs.
        &k.sign(&json!(["dpop+jwt", "ES256"]), &claims(NOW)),
        &k.sign(&k.header(), &json!([1, 2])),
    ] {
        assert!(
            matches!(
                refused(bad),
                ProofError::Malformed(_) | ProofError::Signature
            ),
            "{bad:.40}"
        );
    }
    // A member named twice is refused, not read either way.
    let twice = r#"{"typ":"dpop+jwt","typ":"JWT","alg":"ES256"}"#;
    let jws = format!(
        "{}.{}.AAAA",
        URL_SAFE_NO_PAD.encode(twice),
        URL_SAFE_NO_PAD.encode(claims(NOW).to_string())
    );
    assert!(matches!(refused(&jws), ProofError::Malformed(_)));
}

#[test]
fn the_header_is_read_once() {
    let mut headers = HeaderMap::new();
    assert_eq!(proof(&headers), Ok(None));
    headers.append(DPOP, "a.b.c".parse().unwrap());
    assert_eq!(proof(&headers), Ok(Some("a.b.c")));
    headers.append(DPOP, "d.e.f".parse().unwrap());
    assert_eq!(proof(&headers), Err(ProofError::Repeated));
}

#[test]
fn the_scheme_must_fit_the_binding() {
    let mut headers = HeaderMap::new();
    assert_eq!(presented(None, false, &headers), Ok(None));
    assert_eq!(presented(None, true, &headers), Err(Presentation::NotBound));
    assert_eq!(
        presented(Some("jkt"), false, &headers),
        Err(Presentation::BoundAsBearer)
    );
    assert_eq!(
        presented(Some("jkt"), true, &headers),
        Err(Presentation::Proof(ProofError::Missing))
    );
    headers.append(DPOP, "a.b.c".parse().unwrap());
    assert_eq!(presented(Some("jkt"), true, &headers), Ok(Some("a.b.c")));
    // An unbound token sent as Bearer has nothing to check, proof or not.
    assert_eq!(presented(None, false, &headers), Ok(None));
    headers.append(DPOP, "d.e.f".parse().unwrap());
    assert_eq!(
        presented(Some("jkt"), true, &headers),
        Err(Presentation::Proof(ProofError::Repeated))
    );
}

#[test]
fn a_replay_has_a_reason_of_its_own() {
    assert_eq!(ProofError::Replayed.reason(), "dpop_replay");
    assert_eq!(ProofError::Missing.reason(), "dpop_proof");
    assert_eq!(ProofError::Full.reason(), "dpop_proof");
}

#[test]
fn a_proof_may_be_8_kib_long_and_no_longer() {
    let at_most = "a".repeat(MAX_PROOF_LEN);
    assert_eq!(
        refused(&at_most),
        ProofError::Malformed("not a compact JWS")
    );
    let longer = "a".repeat(MAX_PROOF_LEN + 1);
    assert_eq!(refused(&longer), ProofError::Malformed("longer than 8 KiB"));
}

#[test]
fn the_proof_must_be_made_by_the_key_the_token_is_bound_to() {
    let k = key();
    let own = k.thumbprint();
    let other = key().thumbprint();
    let at = |key: Option<&str>| {
        let expected = Expected {
            key,
            ..expected(Some(TOKEN))
        };
        check(
            &k.proof("GET", URL, Some(TOKEN), NOW),
            &expected,
            &Replay::default(),
        )
    };
    assert_eq!(at(Some(&other)), Err(ProofError::WrongKey));
    assert_eq!(at(Some(&own)), Ok(own.clone()));
    assert_eq!(at(None), Ok(own));
}

/// A proof stays acceptable up to `max_age + 2 × skew` after it was first seen (made `skew`
/// ahead of the server's clock, accepted until `max_age + skew` after its `iat`): its `jti` is
/// refused for all that time, whenever the cache's generation began, and forgotten later.
#[test]
fn a_jti_is_refused_for_as_long_as_its_proof_is_fresh() {
    let (max_age, skew) = (60, 30);
    let at = |now| Expected {
        now,
        ..expected(Some(TOKEN))
    };
    let k = key();
    for began in [0, 1, 29, 59, 91, 119] {
        let replay = Replay::default();
        let first = k.proof("GET", URL, Some(TOKEN), NOW - began);
        check(&first, &at(NOW - began), &replay).unwrap();
        let ahead = k.proof("GET", URL, Some(TOKEN), NOW + skew);
        check(&ahead, &at(NOW), &replay).unwrap();
        for now in NOW..=NOW + max_age + 2 * skew {
            assert_eq!(
                check(&ahead, &at(now), &replay),
                Err(ProofError::Replayed),
                "the generation began {began} s before; replayed {} s after",
                now - NOW
            );
        }
        assert_eq!(
            check(&ahead, &at(NOW + max_age + 2 * skew + 1), &replay),
            Err(ProofError::Old)
        );
        let later = NOW + 10 * (max_age + 2 * skew);
        check(
            &k.proof("GET", URL, Some(TOKEN), later),
            &at(later),
            &replay,
        )
        .unwrap();
        assert_eq!(
            replay.len(),
            1,
            "what is older than two windows is forgotten"
        );
    }
}

#[test]
fn escapes_compare_by_what_they_mean() {
    let at = |path: &str| format!("https://api.example.com{path}");
    // Hex case does not matter; an escaped reserved character stays one.
    assert!(same_url(&at("/a%2fb/c"), &at("/a%2Fb/c")));
    assert!(!same_url(&at("/a%2Fb/c"), &at("/a/b/c")));
    assert!(same_url(&at("/a%3a%3Ab"), &at("/a%3A%3ab")));
    // An escaped unreserved character is the character.
    assert!(same_url(&at("/%7Euser/%41"), &at("/~user/A")));
}
