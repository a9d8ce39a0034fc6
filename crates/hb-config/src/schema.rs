//! How BUILD.toml tables become targets without hb-config knowing any rule: a rule kind
//! registers a [`Schema`] (its table name and a parser), and [`Package::parse`](crate::Package::parse)
//! hands each `[[kind]]` array to the schema of that name. [`tables`] deserializes one
//! top-level key of the document with the document's own spans, so a rule's attribute
//! struct can hold `toml::Spanned` values whose errors point at the right line.

use std::any::Any;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;

use crate::{ConfigError, Package};

/// A rule's parsed attributes, as a [`crate::Target`] holds them. The rule's own module
/// downcasts them back with [`Attrs::as_any`].
pub trait Attrs: Any + Debug + Send + Sync {
    /// The rule kind (`[[kind]]`) the attributes were read for.
    fn kind(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
}

/// A target as a schema declares it: its name and dependency labels as written, and its
/// attributes.
pub struct Declared {
    pub name: Spanned<String>,
    pub deps: Vec<Spanned<String>>,
    pub attrs: Arc<dyn Attrs>,
}

/// How one rule kind's tables are read.
pub trait Schema: Send + Sync {
    /// The name of the rule's array of tables (`python_app` for `[[python_app]]`).
    fn kind(&self) -> &'static str;
    /// Parses and checks every `[[kind]]` table of `pkg`'s text.
    fn parse(&self, pkg: &Package) -> Result<Vec<Declared>, ConfigError>;
}

/// The rule kinds a workspace is read with.
pub type Schemas = Arc<[Arc<dyn Schema>]>;

/// Deserializes the value of top-level key `key` of a TOML document as a `T`, keeping
/// the document's spans; `None` when the key is absent.
pub fn table<T: DeserializeOwned>(text: &str, key: &str) -> Result<Option<T>, toml::de::Error> {
    let de = toml::Deserializer::new(text);
    serde::Deserializer::deserialize_map(de, Pick::<T> { key, _t: PhantomData })
}

/// Every `[[key]]` table of a document, each with its span.
pub fn tables<T: DeserializeOwned>(text: &str, key: &str) -> Result<Vec<Spanned<T>>, toml::de::Error> {
    Ok(table::<Vec<Spanned<T>>>(text, key)?.unwrap_or_default())
}

/// The top-level keys of a document, with their spans.
pub fn top_level_keys(text: &str) -> Result<Vec<Spanned<String>>, toml::de::Error> {
    let de = toml::Deserializer::new(text);
    serde::Deserializer::deserialize_map(de, Keys)
}

struct Pick<'k, T> {
    key: &'k str,
    _t: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Pick<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML document")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<Spanned<String>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML document")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            map.next_value::<IgnoredAny>()?;
            out.push(k);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct T {
        name: Spanned<String>,
    }

    #[test]
    fn picks_one_key_with_document_spans() {
        let text = "[workspace]\n\n[[t]]\nname = \"a\"\n[[other]]\nx = 1\n[[t]]\nname = \"b\"\n";
        let got = tables::<T>(text, "t").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&text[got[1].get_ref().name.span()], "\"b\"");
        let err = tables::<T>("[[t]]\nnam = \"a\"\n", "t").unwrap_err();
        assert_eq!(err.span(), Some(6..9));
        let keys: Vec<String> = top_level_keys(text).unwrap().into_iter().map(|k| k.into_inner()).collect();
        assert_eq!(keys, ["workspace", "t", "other"]);
    }
}
