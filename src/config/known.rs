//! The keys each table of the resource file knows, read from the raw shapes themselves (what
//! serde's derive says each struct's fields are), so that an unknown key can be answered with
//! the nearest known one.
//!
//! [`Tracer`] is a deserializer that feeds no document: it answers each struct with all of its
//! fields, each with a placeholder value, and notes the field names by table path (array
//! indexes left out: every element of `clients` has the same keys).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{self, Deserialize, DeserializeSeed, Visitor};

/// Field names by table path.
type Tables = BTreeMap<Vec<&'static str>, &'static [&'static str]>;

/// The known key of the table at `table` (keys only, no indexes) nearest to `unknown`, when
/// one is near enough to be what was meant.
pub(super) fn nearest(table: &[&str], unknown: &str) -> Option<&'static str> {
    tables()
        .get(table)?
        .iter()
        .map(|known| (strsim::jaro_winkler(known, unknown), *known))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| known)
}

/// The raw file's tables, traced once.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| trace::<super::raw::File>().unwrap_or_default())
}

/// Whether every key in the parsed document `root` is one its table knows, so that it can be
/// deserialized without tracking unknown keys (which copies every key). The values of fields
/// that are no table of the raw shapes (maps keyed by the user, scalars, arrays of scalars) are
/// not looked into: serde ignores nothing there (a map whose values were structs would hide
/// their keys from this walk; the raw shapes have none). `false` also when a table is not known
/// at all.
pub(super) fn all_known(root: &toml::de::DeTable<'_>) -> bool {
    fn walk(table: &toml::de::DeTable<'_>, known: &Known) -> bool {
        table.iter().all(|(key, value)| {
            let Some((_, inner)) = known
                .fields
                .iter()
                .find(|(f, _)| *f == key.get_ref().as_ref())
            else {
                return false;
            };
            let Some(inner) = inner else {
                return true;
            };
            match value.get_ref() {
                toml::de::DeValue::Table(table) => walk(table, inner),
                toml::de::DeValue::Array(items) => items.iter().all(|item| match item.get_ref() {
                    toml::de::DeValue::Table(table) => walk(table, inner),
                    _ => true,
                }),
                _ => true,
            }
        })
    }
    static ROOT: OnceLock<Option<Known>> = OnceLock::new();
    ROOT.get_or_init(|| Known::at(tables(), &mut Vec::new()))
        .as_ref()
        .is_some_and(|known| walk(root, known))
}

/// [`Tables`] as a tree, for [`all_known`]'s walk: a table's fields, each with the table its
/// value is when it is one (looked up by path once, not for every key of a document).
struct Known {
    fields: Vec<(&'static str, Option<Known>)>,
}

impl Known {
    fn at(tables: &Tables, path: &mut Vec<&'static str>) -> Option<Known> {
        let fields = tables.get(path.as_slice())?;
        let fields = fields
            .iter()
            .map(|field| {
                path.push(field);
                let inner = Known::at(tables, path);
                path.pop();
                (*field, inner)
            })
            .collect();
        Some(Known { fields })
    }
}

/// Every struct's field names in `T`, by path.
fn trace<T: for<'de> Deserialize<'de>>() -> Result<Tables, Error> {
    let mut tables = Tables::new();
    T::deserialize(Tracer {
        path: Vec::new(),
        tables: &mut tables,
    })?;
    Ok(tables)
}

/// The serde name of `toml::Spanned`: transparent here (its value has the path of the key).
const SPANNED: &str = "$__serde_spanned_private_Spanned";

struct Tracer<'t> {
    path: Vec<&'static str>,
    tables: &'t mut Tables,
}

impl Tracer<'_> {
    fn at(&mut self, field: Option<&'static str>) -> Tracer<'_> {
        let mut path = self.path.clone();
        path.extend(field);
        Tracer {
            path,
            tables: self.tables,
        }
    }
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    /// A string: what the placeholder of a value with no shape of its own is.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str("")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(One(Some(self)))
    }

    /// A map's keys are the user's: nothing to know inside it.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
            &str,
            &str,
        )>()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let spanned = name == SPANNED;
        if !spanned {
            self.tables.insert(self.path.clone(), fields);
        }
        visitor.visit_map(Fields {
            tracer: self,
            fields: fields.iter(),
            spanned,
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 u8 u16 u32 i128 u128 f32 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A sequence of one element, traced at the sequence's own path.
struct One<'t>(Option<Tracer<'t>>);

impl<'de> de::SeqAccess<'de> for One<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .take()
            .map(|tracer| seed.deserialize(tracer))
            .transpose()
    }
}

/// A struct's fields, each once, each value traced below the struct's path (at the same path
/// for a `Spanned` wrapper).
struct Fields<'t> {
    tracer: Tracer<'t>,
    fields: std::slice::Iter<'static, &'static str>,
    spanned: bool,
    current: Option<&'static str>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = Some(field);
        seed.deserialize(BorrowedStrDeserializer::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = if self.spanned { None } else { self.current };
        seed.deserialize(self.tracer.at(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_file_is_known() {
        let tables = trace::<super::super::raw::File>().unwrap();
        let keys = |path: &[&str]| tables.get(path).copied().unwrap_or_default();
        assert!(keys(&[]).contains(&"proxy") && keys(&[]).contains(&"clients"));
        assert!(keys(&["clients"]).contains(&"redirect_uris"));
        assert!(keys(&["issuer", "signing_keys"]).contains(&"alg"));
        assert!(keys(&["proxy", "trusted_issuers"]).contains(&"wait_for_keys"));
        assert!(keys(&["routes"]).contains(&"path_prefix"));
    }

    #[test]
    fn a_document_with_only_known_keys_is_told_from_one_with_a_stranger() {
        let known = |text: &str| all_known(toml::de::DeTable::parse(text).unwrap().get_ref());
        let routes = "[proxy]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npath_prefix = \"/a\"\n\
                      upstream = \"http://127.0.0.1:1\"\nresource = \"urn:a\"\n\
                      [routes.mcp]\n\"tools/call\" = [\"a\"]\n";
        assert!(known(routes), "a map's keys are the user's");
        assert!(known(
            "[[clients]]\nclient_id = \"a\"\n[[clients]]\nclient_id = \"b\"\n"
        ));
        for stranger in [
            "colour = 1\n",
            "[[clients]]\nclient_id = \"a\"\n[[clients]]\nclient_id = \"b\"\ncolour = 1\n",
            "[issuer]\n[[issuer.signing_keys]]\nalgo = \"ES256\"\n",
            "[issuer]\n[issuer.registration]\nallowed_scope = []\n",
        ] {
            assert!(!known(stranger), "{stranger}");
        }
    }

    #[test]
    fn a_near_miss_is_named_and_a_stranger_is_not() {
        assert_eq!(nearest(&["clients"], "redirect_uri"), Some("redirect_uris"));
        assert_eq!(nearest(&["issuer", "signing_keys"], "algo"), Some("alg"));
        assert_eq!(
            nearest(&["proxy", "trusted_issuers"], "wait_for_key"),
            Some("wait_for_keys")
        );
        assert_eq!(nearest(&[], "proxi"), Some("proxy"));
        assert_eq!(nearest(&["clients"], "colour"), None);
        assert_eq!(nearest(&["nowhere"], "proxy"), None);
    }
}
