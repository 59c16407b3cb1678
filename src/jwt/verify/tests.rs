//! Real keys, real signatures, and hand-made bad tokens.

use std::sync::OnceLock;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    CommonParameters, EllipticCurveKeyParameters, EllipticCurveKeyType, OctetKeyParameters,
    OctetKeyType, RSAKeyParameters, RSAKeyType,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::jwt::{encode, generate_key_file};

const ISS: &str = "https://issuer.test";
const NOW: u64 = 1_750_000_000;

struct Fixture {
    /// One trusted key per algorithm, kid `k-<alg>`.
    trusted: Vec<SigningKey>,
    /// Another key per algorithm with the same kid: what an attacker holds.
    impostors: Vec<SigningKey>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let load = |name: &str, alg: Alg| {
            let path = dir.path().join(format!("{name}-{alg}.pem"));
            generate_key_file(&path, alg).unwrap();
            SigningKey::from_file(&path, alg, Some(format!("k-{alg}")), false).unwrap()
        };
        Fixture {
            trusted: Alg::ALL.iter().map(|&alg| load("trusted", alg)).collect(),
            impostors: Alg::ALL.iter().map(|&alg| load("impostor", alg)).collect(),
        }
    })
}

fn key(alg: Alg) -> &'static SigningKey {
    fixture().trusted.iter().find(|k| k.alg == alg).unwrap()
}

fn impostor(alg: Alg) -> &'static SigningKey {
    fixture().impostors.iter().find(|k| k.alg == alg).unwrap()
}

fn trusted(require_typ: bool) -> TrustedKeys {
    let keys = fixture().trusted.iter().map(VerifyingKey::from_signing_key);
    TrustedKeys::new(vec![IssuerKeys::new(ISS, require_typ, keys)])
}

/// The published JWKS, as another gateway would fetch it: JSON, parsed back.
fn trusted_via_jwks(require_typ: bool) -> TrustedKeys {
    let jwks = json!({ "keys": fixture().trusted.iter().map(|k| &k.jwk).collect::<Vec<_>>() });
    let set: JwkSet = serde_json::from_value(jwks).unwrap();
    let (keys, skipped) = IssuerKeys::from_jwk_set(ISS, require_typ, &set);
    assert!(skipped.is_empty(), "{skipped:?}");
    TrustedKeys::new(vec![keys])
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "client_id": "app", "aud": "urn:api",
        "scope": "read write", "iat": NOW, "nbf": NOW - 10, "exp": NOW + 300, "jti": "j1",
        "name": "Alice", "nested": {"a": [1, 2.5, null, true]},
    })
}

fn claims_with(field: &str, value: Value) -> Value {
    let mut claims = claims();
    claims[field] = value;
    claims
}

fn claims_without(field: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

/// Signs raw header and payload bytes with `key`, whatever they say.
fn sign_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn sign(key: &SigningKey, header: &Value, payload: &Value) -> String {
    sign_raw(
        key,
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(payload).unwrap(),
    )
}

/// A well-formed token from the trusted key of `alg` with these claims.
fn token(alg: Alg, claims: &Value) -> String {
    encode(key(alg), "at+jwt", claims).unwrap()
}

fn check(token: &str) -> Result<Claims, TokenError> {
    verify(token, &trusted(true))
}

fn malformed(result: Result<Claims, TokenError>) {
    assert!(
        matches!(result, Err(TokenError::Malformed(_))),
        "{result:?}"
    );
}

#[test]
fn every_alg_verifies_with_the_local_keys() {
    let keys = trusted(true);
    for alg in Alg::ALL {
        let claims = verify(&token(alg, &claims()), &keys).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(
            claims,
            Claims {
                iss: ISS.into(),
                sub: Some("alice".into()),
                client_id: Some("app".into()),
                aud: vec!["urn:api".into()],
                scope: vec!["read".into(), "write".into()],
                exp: NOW + 300,
                nbf: Some(NOW - 10),
                jti: Some("j1".into()),
                jkt: None,
            }
        );
    }
}

#[test]
fn every_alg_verifies_with_the_published_jwks() {
    let keys = trusted_via_jwks(true);
    for alg in Alg::ALL {
        let claims = verify(&token(alg, &claims()), &keys).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims.sub.as_deref(), Some("alice"));
    }
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let unsigned = format!(
            "{}.{}.",
            b64(&serde_json::to_vec(&header(alg, "k-ES256")).unwrap()),
            b64(&serde_json::to_vec(&claims()).unwrap()),
        );
        assert_eq!(check(&unsigned), Err(TokenError::UnsupportedAlg), "{alg}");
    }
}

/// The classic confusion attack: HMAC keyed with the issuer's public key, which anyone has.
#[test]
fn hmac_keyed_with_the_public_key_is_refused() {
    let jwk = &key(Alg::ES256).jwk;
    let secrets = [serde_json::to_vec(jwk).unwrap(), {
        let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
            unreachable!()
        };
        let mut point = vec![4];
        point.extend(URL_SAFE_NO_PAD.decode(&ec.x).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(&ec.y).unwrap());
        point
    }];
    for secret in secrets {
        for (alg, hmac_alg) in [
            ("HS256", hmac::HMAC_SHA256),
            ("HS384", hmac::HMAC_SHA384),
            ("HS512", hmac::HMAC_SHA512),
        ] {
            let input = format!(
                "{}.{}",
                b64(&serde_json::to_vec(&header(alg, "k-ES256")).unwrap()),
                b64(&serde_json::to_vec(&claims()).unwrap()),
            );
            let tag = hmac::sign(&hmac::Key::new(hmac_alg, &secret), input.as_bytes());
            let forged = format!("{input}.{}", b64(tag.as_ref()));
            assert_eq!(check(&forged), Err(TokenError::UnsupportedAlg), "{alg}");
        }
    }
}

#[test]
fn algs_outside_the_list_are_refused() {
    for alg in [
        "RS384", "RS512", "PS384", "ES512", "ES256K", "Ed25519", "es256", "",
    ] {
        let t = sign(key(Alg::ES256), &header(alg, "k-ES256"), &claims());
        assert_eq!(check(&t), Err(TokenError::UnsupportedAlg), "{alg:?}");
    }
}

#[test]
fn another_key_with_the_trusted_kid_is_a_bad_signature() {
    let keys = trusted(true);
    let via_jwks = trusted_via_jwks(true);
    for alg in Alg::ALL {
        let forged = encode(impostor(alg), "at+jwt", &claims()).unwrap();
        assert_eq!(
            verify(&forged, &keys),
            Err(TokenError::BadSignature),
            "{alg}"
        );
        assert_eq!(
            verify(&forged, &via_jwks),
            Err(TokenError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn a_changed_claim_or_signature_is_a_bad_signature() {
    for alg in Alg::ALL {
        let good = token(alg, &claims());
        let (input, signature) = good.rsplit_once('.').unwrap();
        let (header, _) = input.split_once('.').unwrap();
        let changed = format!(
            "{header}.{}.{signature}",
            b64(&serde_json::to_vec(&claims_with("aud", json!("urn:other"))).unwrap())
        );
        assert_eq!(check(&changed), Err(TokenError::BadSignature), "{alg}");

        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{input}.{}", b64(&sig));
        assert_eq!(check(&flipped), Err(TokenError::BadSignature), "{alg}");

        let truncated = format!("{input}.{}", b64(&sig[..sig.len() - 1]));
        assert_eq!(check(&truncated), Err(TokenError::BadSignature), "{alg}");
        assert_eq!(check(&format!("{input}.")), Err(TokenError::BadSignature));
    }
}

#[test]
fn the_header_alg_cannot_choose_another_algorithm_for_the_key() {
    let local = trusted(true);
    let via_jwks = trusted_via_jwks(true);

    // An RS256 token relabelled PS256: the local key only does RS256.
    let rs = token(Alg::RS256, &claims());
    let (_, rest) = rs.split_once('.').unwrap();
    let relabelled = format!(
        "{}.{rest}",
        b64(&serde_json::to_vec(&header("PS256", "k-RS256")).unwrap())
    );
    assert_eq!(verify(&relabelled, &local), Err(TokenError::AlgMismatch));
    assert_eq!(verify(&relabelled, &via_jwks), Err(TokenError::AlgMismatch));

    // A JWK without alg verifies both RSA schemes, but never one's signature as the other's.
    let mut bare = key(Alg::RS256).jwk.clone();
    bare.common.key_algorithm = None;
    let bare = VerifyingKey::from_jwk(&bare).unwrap();
    assert_eq!(bare.algs().collect::<Vec<_>>(), [Alg::RS256, Alg::PS256]);
    let both = TrustedKeys::new(vec![IssuerKeys::new(ISS, true, [bare])]);
    assert!(verify(&rs, &both).is_ok());
    assert_eq!(verify(&relabelled, &both), Err(TokenError::BadSignature));
    // And the other way: a PSS signature relabelled RS256, against a bare PS256 JWK.
    let mut bare_pss = key(Alg::PS256).jwk.clone();
    bare_pss.common.key_algorithm = None;
    let both = TrustedKeys::new(vec![IssuerKeys::new(
        ISS,
        true,
        [VerifyingKey::from_jwk(&bare_pss).unwrap()],
    )]);
    let ps = token(Alg::PS256, &claims());
    assert!(verify(&ps, &both).is_ok());
    let (_, rest) = ps.split_once('.').unwrap();
    let relabelled = format!(
        "{}.{rest}",
        b64(&serde_json::to_vec(&header("RS256", "k-PS256")).unwrap())
    );
    assert_eq!(verify(&relabelled, &both), Err(TokenError::BadSignature));

    // Keys of other types, named with an alg of another type.
    for (kid, alg, signer) in [
        ("k-ES256", "ES384", Alg::ES384),
        ("k-ES384", "ES256", Alg::ES256),
        ("k-EdDSA", "ES256", Alg::ES256),
        ("k-ES256", "RS256", Alg::RS256),
        ("k-RS256", "EdDSA", Alg::EdDSA),
    ] {
        let t = sign(key(signer), &header(alg, kid), &claims());
        assert_eq!(
            verify(&t, &local),
            Err(TokenError::AlgMismatch),
            "{kid} {alg}"
        );
        assert_eq!(
            verify(&t, &via_jwks),
            Err(TokenError::AlgMismatch),
            "{kid} {alg}"
        );
    }
}

#[test]
fn keys_sharing_a_kid_are_told_apart_by_alg() {
    let mut ec = key(Alg::ES256).jwk.clone();
    let mut ed = key(Alg::EdDSA).jwk.clone();
    ec.common.key_id = Some("shared".into());
    ed.common.key_id = Some("shared".into());
    let issuer = IssuerKeys::new(
        ISS,
        true,
        [
            VerifyingKey::from_jwk(&ec).unwrap(),
            VerifyingKey::from_jwk(&ed).unwrap(),
        ],
    );
    let keys = TrustedKeys::new(vec![issuer]);
    for alg in [Alg::ES256, Alg::EdDSA] {
        let t = sign(key(alg), &header(alg.as_str(), "shared"), &claims());
        assert!(verify(&t, &keys).is_ok(), "{alg}");
    }
    let t = sign(key(Alg::ES384), &header("ES384", "shared"), &claims());
    assert_eq!(verify(&t, &keys), Err(TokenError::AlgMismatch));
}

#[test]
fn an_unknown_kid_is_told_apart() {
    let t = sign(key(Alg::ES256), &header("ES256", "k-rotated"), &claims());
    assert_eq!(check(&t), Err(TokenError::UnknownKid));
    let no_kid = sign(
        key(Alg::ES256),
        &json!({"alg": "ES256", "typ": "at+jwt"}),
        &claims(),
    );
    malformed(check(&no_kid));
}

#[test]
fn only_trusted_issuers_are_accepted() {
    let t = token(Alg::ES256, &claims_with("iss", json!("https://evil.test")));
    assert_eq!(check(&t), Err(TokenError::UntrustedIssuer));
    let t = token(
        Alg::ES256,
        &claims_with("iss", json!("https://issuer.test/")),
    );
    assert_eq!(
        check(&t),
        Err(TokenError::UntrustedIssuer),
        "compared exactly"
    );
    malformed(check(&token(Alg::ES256, &claims_without("iss"))));
    malformed(check(&token(Alg::ES256, &claims_with("iss", json!(["x"])))));
    assert_eq!(
        verify(&token(Alg::ES256, &claims()), &TrustedKeys::default()),
        Err(TokenError::UntrustedIssuer)
    );
}

#[test]
fn typ_must_be_at_jwt_when_the_issuer_requires_it() {
    let strict = trusted(true);
    let lax = trusted(false);
    let with_typ = |typ: Option<&str>| {
        let mut h = header("ES256", "k-ES256");
        match typ {
            Some(typ) => h["typ"] = json!(typ),
            None => {
                h.as_object_mut().unwrap().remove("typ");
            }
        }
        sign(key(Alg::ES256), &h, &claims())
    };
    for typ in [Some("JWT"), None, Some("at+jwt+x"), Some("")] {
        assert_eq!(
            verify(&with_typ(typ), &strict),
            Err(TokenError::BadTyp),
            "{typ:?}"
        );
        assert!(verify(&with_typ(typ), &lax).is_ok(), "{typ:?}");
    }
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/AT+JWT",
    ] {
        assert!(verify(&with_typ(Some(typ)), &strict).is_ok(), "{typ}");
    }
    // Some encoders escape the slash.
    let escaped = sign_raw(
        key(Alg::ES256),
        br#"{"alg":"ES256","kid":"k-ES256","typ":"application\/at+jwt"}"#,
        &serde_json::to_vec(&claims()).unwrap(),
    );
    assert!(verify(&escaped, &strict).is_ok());
    // typ is checked only once the signature verified.
    let forged = {
        let mut h = header("ES256", "k-ES256");
        h["typ"] = json!("JWT");
        sign(impostor(Alg::ES256), &h, &claims())
    };
    assert_eq!(verify(&forged, &strict), Err(TokenError::BadSignature));
}

#[test]
fn tokens_over_8_kib_are_refused_before_anything_else() {
    let padded = |len: usize| {
        let mut claims = claims();
        claims["pad"] = json!("");
        let base = token(Alg::ES256, &claims).len();
        // Four base64 characters per three bytes of padding.
        claims["pad"] = json!("x".repeat((len - base) / 4 * 3));
        token(Alg::ES256, &claims)
    };
    let fits = padded(8192);
    assert!(fits.len() <= 8192 && fits.len() > 8150, "{}", fits.len());
    assert!(check(&fits).is_ok());
    assert_eq!(check(&"a".repeat(8193)), Err(TokenError::TooLarge));
    let big = padded(8300);
    assert!(big.len() > 8192);
    assert_eq!(check(&big), Err(TokenError::TooLarge));
}

#[test]
fn malformed_shapes_are_refused_without_panicking() {
    let good = token(Alg::ES256, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let h = |json: &str| URL_SAFE_NO_PAD.encode(json);
    let cases = [
        String::new(),
        "garbage".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        parts[0].into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}",
            URL_SAFE.encode(br#"{"alg":"ES256","kid":"k-ES256"}"#),
            "e30.x"
        ),
        format!("{}.{}.{}", parts[0], parts[1], "not base64!"),
        format!("{}.{}.{}", h("not json"), parts[1], parts[2]),
        format!("{}.{}.{}", h("[]"), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            h(r#"["ES256","k-ES256","at+jwt"]"#),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", h(r#"{"alg":5}"#), parts[1], parts[2]),
        format!("{}.{}.{}", h(r#"{"kid":"k-ES256"}"#), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            h(r#"{"alg":"ES256","alg":"none","kid":"k-ES256"}"#),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            h(r#"{"alg":"ES256","kid":"k-ES256","crit":["exp"]}"#),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], h("not json"), parts[2]),
        format!("{}.{}.{}", parts[0], h(r#"["iss"]"#), parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            h(r#"{"iss":"x","iss":"y"}"#),
            parts[2]
        ),
        format!("{}.{}.{}", parts[0], h("\u{0}"), parts[2]),
    ];
    for (i, case) in cases.iter().enumerate() {
        let result = check(case);
        assert!(
            matches!(result, Err(TokenError::Malformed(_))),
            "case {i}: {result:?}"
        );
    }
}

#[test]
fn aud_is_a_string_or_a_non_empty_array_of_strings() {
    let aud = |v: Value| check(&token(Alg::ES256, &claims_with("aud", v)));
    assert_eq!(aud(json!("urn:a")).unwrap().aud, ["urn:a"]);
    assert_eq!(
        aud(json!(["urn:a", "urn:b"])).unwrap().aud,
        ["urn:a", "urn:b"]
    );
    malformed(aud(json!([])));
    malformed(aud(json!(["urn:a", 5])));
    malformed(aud(json!(5)));
    malformed(aud(json!(null)));
    malformed(aud(json!({"urn:a": true})));
    malformed(check(&token(Alg::ES256, &claims_without("aud"))));
}

#[test]
fn scope_is_a_space_delimited_string_or_an_array() {
    let scope = |v: Value| check(&token(Alg::ES256, &claims_with("scope", v)));
    assert_eq!(scope(json!("a b:c")).unwrap().scope, ["a", "b:c"]);
    assert_eq!(scope(json!(" a  b ")).unwrap().scope, ["a", "b"]);
    assert_eq!(scope(json!(["a", "b"])).unwrap().scope, ["a", "b"]);
    assert!(scope(json!("")).unwrap().scope.is_empty());
    assert!(scope(json!([])).unwrap().scope.is_empty());
    let absent = check(&token(Alg::ES256, &claims_without("scope"))).unwrap();
    assert!(absent.scope.is_empty());
    malformed(scope(json!(["a", ["b"]])));
    malformed(scope(json!(true)));
    malformed(scope(json!(null)));
}

#[test]
fn exp_and_nbf_must_be_sane_integers() {
    for field in ["exp", "nbf"] {
        for bad in [
            json!(1.5),
            json!(1_750_000_300.0),
            json!("1750000300"),
            json!(-1),
            json!(1e30),
            json!(null),
            json!(true),
            json!([NOW]),
            json!(MAX_NUMERIC_DATE + 1),
            json!(u64::MAX),
        ] {
            malformed(check(&token(Alg::ES256, &claims_with(field, bad.clone()))));
        }
        // Too large for a u64: serde_json reads it as a float.
        let raw = serde_json::to_string(&claims()).unwrap().replace(
            &format!("\"{field}\":"),
            &format!("\"{field}\":184467440737095516160,\"x\":"),
        );
        let t = sign_raw(
            key(Alg::ES256),
            &serde_json::to_vec(&header("ES256", "k-ES256")).unwrap(),
            raw.as_bytes(),
        );
        malformed(check(&t));
    }
    let max = check(&token(
        Alg::ES256,
        &claims_with("exp", json!(MAX_NUMERIC_DATE)),
    ))
    .unwrap();
    assert_eq!(max.exp, MAX_NUMERIC_DATE);
    malformed(check(&token(Alg::ES256, &claims_without("exp"))));
    let no_nbf = check(&token(Alg::ES256, &claims_without("nbf"))).unwrap();
    assert_eq!(no_nbf.nbf, None);
}

#[test]
fn sub_client_id_and_jti_are_strings_when_present() {
    malformed(check(&token(Alg::ES256, &claims_with("sub", json!(42)))));
    malformed(check(&token(Alg::ES256, &claims_with("jti", json!(7)))));
    let no_jti = check(&token(Alg::ES256, &claims_without("jti"))).unwrap();
    assert_eq!(no_jti.jti, None);
    malformed(check(&token(
        Alg::ES256,
        &claims_with("client_id", json!(null)),
    )));
    let bare = check(&token(Alg::ES256, &claims_without("sub"))).unwrap();
    assert_eq!(bare.sub, None);
}

#[test]
fn ill_typed_claims_of_a_forged_token_are_a_bad_signature() {
    let forged = encode(
        impostor(Alg::ES256),
        "at+jwt",
        &claims_with("exp", json!(1.5)),
    )
    .unwrap();
    assert_eq!(check(&forged), Err(TokenError::BadSignature));
}

#[test]
fn check_time_allows_skew_both_ways() {
    let skew = Duration::from_secs(30);
    let at = |exp: u64, nbf: Option<u64>| Claims {
        iss: ISS.into(),
        sub: None,
        client_id: None,
        aud: vec!["a".into()],
        scope: Vec::new(),
        exp,
        nbf,
        jti: None,
        jkt: None,
    };
    let now = NOW;
    assert_eq!(check_time(&at(now + 1, None), now, Duration::ZERO), Ok(()));
    assert_eq!(
        check_time(&at(now, None), now, Duration::ZERO),
        Err(TokenError::Expired)
    );
    assert_eq!(check_time(&at(now - 29, None), now, skew), Ok(()));
    assert_eq!(
        check_time(&at(now - 30, None), now, skew),
        Err(TokenError::Expired)
    );
    assert_eq!(
        check_time(&at(now + 60, Some(now)), now, Duration::ZERO),
        Ok(())
    );
    assert_eq!(
        check_time(&at(now + 60, Some(now + 1)), now, Duration::ZERO),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(check_time(&at(now + 60, Some(now + 30)), now, skew), Ok(()));
    assert_eq!(
        check_time(&at(now + 60, Some(now + 31)), now, skew),
        Err(TokenError::NotYetValid)
    );
    // Saturating: no overflow at either end.
    assert_eq!(
        check_time(&at(u64::MAX, Some(0)), u64::MAX - 1, Duration::MAX),
        Ok(())
    );
    assert_eq!(
        check_time(&at(0, None), 0, Duration::ZERO),
        Err(TokenError::Expired)
    );
}

#[test]
fn messages_never_carry_the_token() {
    let marker = "SECRETMARKER";
    let mut claims = claims_with("exp", json!(marker));
    claims["sub"] = json!(marker);
    let t = token(Alg::ES256, &claims);
    let err = check(&t).unwrap_err();
    assert!(matches!(err, TokenError::Malformed(_)));
    let forged = sign(key(Alg::ES256), &header(marker, marker), &claims);
    for err in [err, check(&forged).unwrap_err(), check(marker).unwrap_err()] {
        let text = err.to_string();
        assert!(!text.contains(marker) && !text.contains(&t[..20]), "{text}");
        // RFC 6750 error_description characters.
        assert!(
            text.bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "{text}"
        );
    }
}

/// The debug form (what a log line would show) names the key and its algorithms, nothing else.
#[test]
fn a_verifying_key_debugs_as_its_kid_and_algs() {
    let key = VerifyingKey::from_signing_key(key(Alg::ES256));
    assert_eq!(
        format!("{key:?}"),
        "VerifyingKey { kid: \"k-ES256\", algs: [ES256], .. }"
    );
}

#[test]
fn the_published_jwk_yields_the_same_key_and_alg() {
    for alg in Alg::ALL {
        let local = VerifyingKey::from_signing_key(key(alg));
        let published = VerifyingKey::from_jwk(&key(alg).jwk).unwrap();
        assert_eq!(local.kid(), format!("k-{alg}"));
        assert_eq!(published.kid(), local.kid());
        assert_eq!(published.algs().collect::<Vec<_>>(), [alg]);
        assert_eq!(local.algs().collect::<Vec<_>>(), [alg]);
    }
}

#[test]
fn jwks_without_alg_infer_it_from_the_key() {
    for (alg, inferred) in [
        (Alg::ES256, vec![Alg::ES256]),
        (Alg::ES384, vec![Alg::ES384]),
        (Alg::EdDSA, vec![Alg::EdDSA]),
        (Alg::PS256, vec![Alg::RS256, Alg::PS256]),
    ] {
        let mut jwk = key(alg).jwk.clone();
        jwk.common.key_algorithm = None;
        jwk.common.public_key_use = None;
        let key = VerifyingKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.algs().collect::<Vec<_>>(), inferred);
    }
}

fn jwk_json(value: Value) -> Result<VerifyingKey, JwkError> {
    VerifyingKey::from_jwk(&serde_json::from_value(value).unwrap())
}

#[test]
fn unusable_jwks_are_refused() {
    let ec = serde_json::to_value(&key(Alg::ES256).jwk).unwrap();
    let with = |field: &str, value: Value| {
        let mut jwk = ec.clone();
        jwk[field] = value;
        jwk
    };
    let mut no_kid = ec.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    assert_eq!(jwk_json(no_kid).unwrap_err(), JwkError::MissingKid);
    assert_eq!(
        jwk_json(with("kid", json!(""))).unwrap_err(),
        JwkError::MissingKid
    );
    assert_eq!(
        jwk_json(with("use", json!("enc"))).unwrap_err(),
        JwkError::NotForSignatures
    );
    assert_eq!(
        jwk_json(with("key_ops", json!(["encrypt"]))).unwrap_err(),
        JwkError::NotForSignatures
    );
    assert!(jwk_json(with("key_ops", json!(["verify"]))).is_ok());
    assert_eq!(
        jwk_json(with("alg", json!("ES384"))).unwrap_err(),
        JwkError::AlgMismatch {
            alg: Alg::ES384,
            key: "EC P-256"
        }
    );
    assert!(matches!(
        jwk_json(with("alg", json!("HS256"))).unwrap_err(),
        JwkError::UnsupportedAlg(_)
    ));
    assert!(matches!(
        jwk_json(with("alg", json!("RSA-OAEP"))).unwrap_err(),
        JwkError::UnsupportedAlg(_)
    ));
    // One coordinate of the wrong length is refused by isogate's own check, whichever it is
    // and whether it is short or long (not only by the crypto library's point check).
    let wrong_length = JwkError::Invalid("EC coordinates of the wrong length");
    for field in ["x", "y"] {
        for len in [31, 33] {
            assert_eq!(
                jwk_json(with(field, json!(b64(&vec![7; len])))).unwrap_err(),
                wrong_length,
                "{field} of {len} bytes"
            );
        }
    }
    assert!(matches!(
        jwk_json(with("x", json!("AAAA"))).unwrap_err(),
        JwkError::Invalid(_)
    ));
    assert!(matches!(
        jwk_json(with("x", json!("not base64!"))).unwrap_err(),
        JwkError::Invalid(_)
    ));
    // A point off the curve.
    let mut off = ec.clone();
    off["y"] = off["x"].clone();
    assert!(matches!(jwk_json(off).unwrap_err(), JwkError::Invalid(_)));

    let oct = Jwk {
        common: CommonParameters {
            key_id: Some("h".into()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKey(OctetKeyParameters {
            key_type: OctetKeyType::Octet,
            value: b64(b"secret"),
        }),
    };
    assert_eq!(
        VerifyingKey::from_jwk(&oct).unwrap_err(),
        JwkError::Symmetric
    );

    let p521 = Jwk {
        common: CommonParameters {
            key_id: Some("p".into()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P521,
            x: b64(&[1; 66]),
            y: b64(&[1; 66]),
        }),
    };
    assert_eq!(
        VerifyingKey::from_jwk(&p521).unwrap_err(),
        JwkError::UnsupportedCurve(EllipticCurve::P521)
    );

    let other = json!({"kty": "XYZ", "kid": "o", "foo": "bar"});
    assert_eq!(jwk_json(other).unwrap_err(), JwkError::UnsupportedKeyType);

    let mut okp = serde_json::to_value(&key(Alg::EdDSA).jwk).unwrap();
    okp["x"] = json!(b64(&[7; 31]));
    assert!(matches!(jwk_json(okp).unwrap_err(), JwkError::Invalid(_)));
}

#[test]
fn rsa_jwks_need_2048_bits_and_a_fitting_alg() {
    let rsa = |n: Vec<u8>, alg: Option<&str>| {
        let mut jwk = Jwk {
            common: CommonParameters {
                key_id: Some("r".into()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: b64(&n),
                e: "AQAB".into(),
            }),
        };
        jwk.common.key_algorithm = alg.map(|a| a.parse().unwrap());
        VerifyingKey::from_jwk(&jwk)
    };
    let odd = |bytes: usize| {
        let mut n = vec![0xC3; bytes];
        n[bytes - 1] = 0x01;
        n
    };
    assert_eq!(rsa(odd(128), None).unwrap_err(), JwkError::RsaSize(1024));
    assert_eq!(rsa(odd(255), None).unwrap_err(), JwkError::RsaSize(2040));
    let mut leading_zero = vec![0];
    leading_zero.extend(odd(128));
    assert_eq!(
        rsa(leading_zero, None).unwrap_err(),
        JwkError::RsaSize(1024)
    );
    assert!(rsa(odd(256), None).is_ok());
    // One bit short of 2048: a top byte below 0x80 counts its leading zero bits.
    let mut short = odd(256);
    short[0] = 0x7F;
    assert_eq!(rsa(short, None).unwrap_err(), JwkError::RsaSize(2047));
    assert_eq!(
        rsa(odd(256), Some("ES256")).unwrap_err(),
        JwkError::AlgMismatch {
            alg: Alg::ES256,
            key: "RSA"
        }
    );
    assert_eq!(
        rsa(odd(256), Some("PS256"))
            .unwrap()
            .algs()
            .collect::<Vec<_>>(),
        [Alg::PS256]
    );
    // The published key, with a leading zero octet on n, is the same key.
    let mut jwk = key(Alg::RS256).jwk.clone();
    if let AlgorithmParameters::RSA(params) = &mut jwk.algorithm {
        let mut n = vec![0];
        n.extend(URL_SAFE_NO_PAD.decode(&params.n).unwrap());
        params.n = b64(&n);
    }
    let keys = TrustedKeys::new(vec![IssuerKeys::new(
        ISS,
        true,
        [VerifyingKey::from_jwk(&jwk).unwrap()],
    )]);
    assert!(verify(&token(Alg::RS256, &claims()), &keys).is_ok());
}

#[test]
fn from_jwk_set_keeps_the_good_keys_and_names_the_rest() {
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [
        key(Alg::ES256).jwk,
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "use": "enc", "kid": "e"},
    ]}))
    .unwrap();
    let (keys, skipped) = IssuerKeys::from_jwk_set(ISS, true, &jwks);
    assert_eq!(
        keys.keys().map(VerifyingKey::kid).collect::<Vec<_>>(),
        ["k-ES256"]
    );
    assert_eq!(
        skipped,
        [
            (Some("h".into()), JwkError::Symmetric),
            (Some("e".into()), JwkError::NotForSignatures),
        ]
    );
}

#[test]
fn every_key_set_gets_a_new_generation() {
    let a = trusted(true);
    let b = trusted(true);
    assert!(b.generation() > a.generation());
    let other = IssuerKeys::new(
        "https://other.test",
        false,
        [VerifyingKey::from_signing_key(key(Alg::EdDSA))],
    );
    let c = TrustedKeys::new(vec![IssuerKeys::new(ISS, true, []), other]);
    assert!(c.generation() > b.generation());
    assert_eq!(c.issuers().count(), 2);
    let t = token(Alg::ES256, &claims());
    assert_eq!(verify(&t, &c), Err(TokenError::UnknownKid));
    assert!(verify(&t, &a).is_ok());
}

/// Two keys of one type under one `kid` (a rotation that reused the kid): a token signed by
/// either verifies, and a third key's signature still fails.
#[test]
fn two_keys_of_one_type_under_one_kid_are_both_tried() {
    for alg in [Alg::ES256, Alg::RS256, Alg::EdDSA] {
        // The impostor fixture has the same kid as the trusted key: here both are published.
        let keys = TrustedKeys::new(vec![IssuerKeys::new(
            ISS,
            true,
            [key(alg), impostor(alg)]
                .into_iter()
                .map(VerifyingKey::from_signing_key),
        )]);
        for signer in [key(alg), impostor(alg)] {
            let token = encode(signer, "at+jwt", &claims()).unwrap();
            assert!(verify(&token, &keys).is_ok(), "{alg}");
        }
        let only_impostor = TrustedKeys::new(vec![IssuerKeys::new(
            ISS,
            true,
            [VerifyingKey::from_signing_key(impostor(alg))],
        )]);
        assert_eq!(
            verify(&token(alg, &claims()), &only_impostor).map(|_| ()),
            Err(TokenError::BadSignature)
        );
    }
}

#[test]
fn the_first_of_two_entries_for_an_issuer_wins() {
    let keys = TrustedKeys::new(vec![
        IssuerKeys::new(
            ISS,
            false,
            fixture().trusted.iter().map(VerifyingKey::from_signing_key),
        ),
        IssuerKeys::new(ISS, true, []),
    ]);
    assert!(!keys.issuer(ISS).unwrap().require_typ);
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,400}") {
        let _ = check(&s);
    }

    #[test]
    fn three_arbitrary_parts_never_panic(
        h in "[A-Za-z0-9_-]{0,80}",
        p in "[A-Za-z0-9_-]{0,200}",
        s in "[A-Za-z0-9_-]{0,120}",
    ) {
        let _ = check(&format!("{h}.{p}.{s}"));
    }

    #[test]
    fn arbitrary_json_parts_never_panic(h in "\\PC{0,60}", p in "\\PC{0,200}") {
        let header = format!(r#"{{"alg":"ES256","kid":"k-ES256",{h}"#);
        let payload = format!(r#"{{"iss":"{ISS}",{p}"#);
        let t = sign_raw(key(Alg::ES256), header.as_bytes(), payload.as_bytes());
        let _ = check(&t);
        let t = sign_raw(key(Alg::ES256), h.as_bytes(), p.as_bytes());
        let _ = check(&t);
    }

    /// Any change to a valid token is refused; only the token itself verifies.
    #[test]
    fn mutations_of_a_valid_token_never_pass(
        alg in prop::sample::select(Alg::ALL.to_vec()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let good = token(alg, &claims());
        let mut bytes = good.clone().into_bytes();
        for (at, byte, kind) in edits {
            const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
            let byte = CHARS[usize::from(byte) % CHARS.len()];
            match kind {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                1 => {
                    let i = at.index(bytes.len() + 1);
                    bytes.insert(i, byte);
                }
                _ if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        let mutated = String::from_utf8(bytes).unwrap();
        if let Ok(claims) = check(&mutated) {
            prop_assert_eq!(&mutated, &good);
            prop_assert_eq!(claims.sub.as_deref(), Some("alice"));
        }
    }
}
