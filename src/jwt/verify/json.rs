//! The JSON of a token, read in one pass without building a tree: the JOSE header, and the
//! claims kept as found so that their types are judged only once the signature verified.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Claims, TokenError, MAX_NUMERIC_DATE};

/// A JSON object read as `T`. Derived structs would also take an array of their fields in
/// order; a JOSE header or claims set is an object only.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// The JOSE header. Duplicate names fail to parse (serde refuses them), so no two parsers can
/// disagree about which `alg` counts.
#[derive(Deserialize)]
pub(super) struct Header<'a> {
    #[serde(borrow, default)]
    pub(super) alg: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) typ: Option<Text<'a>>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand; isogate understands none.
    #[serde(default)]
    pub(super) crit: Present,
}

/// A string borrowed from the decoded JSON unless it holds escapes.
#[derive(Deserialize)]
pub(super) struct Text<'a>(#[serde(borrow)] pub(super) Cow<'a, str>);

/// Whether a member was there at all, whatever its value (`null` included).
#[derive(Default)]
pub(super) struct Present(pub(super) bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

/// The claims, read in one pass without building a JSON tree. Each is kept as found (absent,
/// of the right shape, or not), so an ill-typed claim is reported only once the signature
/// has verified. Other members are skipped; a duplicated one fails the parse.
#[derive(Deserialize)]
pub(super) struct Payload {
    #[serde(default)]
    pub(super) iss: Field<String>,
    #[serde(default)]
    sub: Field<String>,
    #[serde(default)]
    client_id: Field<String>,
    #[serde(default)]
    aud: Field<Audience>,
    #[serde(default)]
    scope: Field<Scopes>,
    #[serde(default)]
    exp: Field<NumericDate>,
    #[serde(default)]
    nbf: Field<NumericDate>,
    #[serde(default)]
    jti: Field<String>,
    #[serde(default)]
    cnf: Field<Confirmation>,
}

impl Claims {
    /// Judges the claims' types, once the signature verified; `iss` was taken out before.
    pub(super) fn from_payload(iss: String, payload: Payload) -> Result<Self, TokenError> {
        let aud = match payload.aud {
            Field::Valid(Audience(aud)) if !aud.is_empty() => aud,
            Field::Absent => return Err(TokenError::Malformed("aud is missing")),
            _ => {
                return Err(TokenError::Malformed(
                    "aud must be a string or a non-empty array of strings",
                ))
            }
        };
        let scope = match payload.scope {
            Field::Absent => Vec::new(),
            Field::Valid(Scopes(scope)) => scope,
            Field::Invalid => {
                return Err(TokenError::Malformed(
                    "scope must be a string or an array of strings",
                ))
            }
        };
        // Kept in the verified-token cache, many thousands at a time: no spare capacity.
        let (mut aud, mut scope) = (aud, scope);
        aud.shrink_to_fit();
        scope.shrink_to_fit();
        let exp = match payload.exp {
            Field::Valid(NumericDate(exp)) => exp,
            Field::Absent => return Err(TokenError::Malformed("exp is missing")),
            Field::Invalid => return Err(TokenError::Malformed(BAD_DATE)),
        };
        Ok(Claims {
            iss,
            sub: optional(payload.sub, "sub must be a string")?,
            client_id: optional(payload.client_id, "client_id must be a string")?,
            aud,
            scope,
            exp,
            nbf: optional(payload.nbf, BAD_DATE)?.map(|NumericDate(nbf)| nbf),
            jti: optional(payload.jti, "jti must be a string")?,
            jkt: match payload.cnf {
                Field::Absent => None,
                Field::Valid(Confirmation(Some(jkt))) => Some(jkt),
                // A key the gateway cannot check the holder of (mTLS's x5t#S256, a JWK):
                // refused rather than taken as a bearer token.
                Field::Valid(Confirmation(None)) => {
                    return Err(TokenError::Malformed(
                        "cnf has no jkt; other confirmation methods are not supported",
                    ))
                }
                Field::Invalid => {
                    return Err(TokenError::Malformed(
                        "cnf must be an object with a string jkt",
                    ))
                }
            },
        })
    }
}

const BAD_DATE: &str = "exp and nbf must be integers from 0 to 253402300799";

fn optional<T>(field: Field<T>, invalid: &'static str) -> Result<Option<T>, TokenError> {
    match field {
        Field::Absent => Ok(None),
        Field::Valid(value) => Ok(Some(value)),
        Field::Invalid => Err(TokenError::Malformed(invalid)),
    }
}

/// A claim as found: absent, of the expected shape, or present with another shape.
#[derive(Default)]
pub(super) enum Field<T> {
    #[default]
    Absent,
    Valid(T),
    Invalid,
}

impl<T> From<Option<T>> for Field<T> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Field::Invalid, Field::Valid)
    }
}

/// The JSON shapes a claim accepts; every other shape makes it [`Field::Invalid`].
trait Shape: Sized {
    fn of_str(_: &str) -> Option<Self> {
        None
    }

    fn of_u64(_: u64) -> Option<Self> {
        None
    }

    fn of_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn of_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl Shape for String {
    fn of_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

/// A JSON integer of seconds since the epoch, no later than [`MAX_NUMERIC_DATE`]. Floats,
/// negatives and strings are refused: they are where implementations disagree.
struct NumericDate(u64);

impl Shape for NumericDate {
    fn of_u64(secs: u64) -> Option<Self> {
        (secs <= MAX_NUMERIC_DATE).then_some(NumericDate(secs))
    }
}

/// `aud`: one string, or an array of strings.
struct Audience(Vec<String>);

impl Shape for Audience {
    fn of_str(s: &str) -> Option<Self> {
        Some(Audience(vec![s.to_owned()]))
    }

    fn of_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        strings(seq).map(|list| list.map(Audience))
    }
}

/// `scope`: a space-delimited string (RFC 9068), or an array of strings.
struct Scopes(Vec<String>);

impl Shape for Scopes {
    fn of_str(s: &str) -> Option<Self> {
        Some(Scopes(
            s.split(' ')
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }

    fn of_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        strings(seq).map(|list| list.map(Scopes))
    }
}

/// `cnf` (RFC 7800): an object; its `jkt` (RFC 9449 §6.1) when it has one. Other members
/// are skipped; a `jkt` that is not a string makes the whole claim invalid.
struct Confirmation(Option<String>);

impl Shape for Confirmation {
    fn of_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut jkt = Field::Absent;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name == "jkt" {
                if !matches!(jkt, Field::Absent) {
                    return Err(serde::de::Error::duplicate_field("jkt"));
                }
                jkt = map.next_value::<Field<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match jkt {
            Field::Absent => Some(Confirmation(None)),
            Field::Valid(jkt) => Some(Confirmation(Some(jkt))),
            Field::Invalid => None,
        })
    }
}

/// An array whose elements are all strings; `None` when one is not (the rest is still read).
fn strings<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Vec<String>>, A::Error> {
    let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
    let mut all_strings = true;
    while let Some(item) = seq.next_element::<Field<String>>()? {
        match item {
            Field::Valid(s) => list.push(s),
            _ => all_strings = false,
        }
    }
    Ok(all_strings.then_some(list))
}

impl<'de, T: Shape> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<'de, T: Shape> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
        Ok(Field::Invalid)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Field<T>, E> {
        // serde_json only calls this for negative integers.
        Ok(Field::Invalid)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Field<T>, E> {
        Ok(T::of_u64(v).into())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field<T>, E> {
        // Fractions, exponents, and integers too large for a u64.
        Ok(Field::Invalid)
    }

    fn visit_str<E>(self, v: &str) -> Result<Field<T>, E> {
        Ok(T::of_str(v).into())
    }

    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Invalid)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
        T::of_seq(seq).map(Field::from)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
        T::of_map(map).map(Field::from)
    }
}
