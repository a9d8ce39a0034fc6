//! How BUILD.toml tables become targets without hb-config knowing any rule: a rule kind
//! registers a [`Schema`] (its table name and a parser), and [`Package::parse`](crate::Package::parse)
//! hands each `[[kind]]` array to the schema of that name. The text is parsed once into a
//! [`Document`], whose [`Document::tables`] deserializes one top-level key with the
//! text's own spans, so a rule's attribute struct can hold `toml::Spanned` values whose
//! errors point at the right line.

use std::any::Any;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Range;
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
    /// Parses and checks every `[[kind]]` table of `doc`, `pkg`'s text parsed.
    fn parse(&self, pkg: &Package, doc: &Document) -> Result<Vec<Declared>, ConfigError>;
}

/// The rule kinds a workspace is read with.
pub type Schemas = Arc<[Arc<dyn Schema>]>;

/// A TOML error: its message and where in the text it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    pub message: String,
    pub span: Option<Range<usize>>,
}

impl From<toml_edit::TomlError> for TomlError {
    fn from(e: toml_edit::TomlError) -> TomlError {
        TomlError { message: e.message().to_string(), span: e.span() }
    }
}

impl From<toml_edit::de::Error> for TomlError {
    fn from(e: toml_edit::de::Error) -> TomlError {
        TomlError { message: e.message().to_string(), span: e.span() }
    }
}

/// A BUILD.toml parsed once. Each rule kind's tables are deserialized from this tree
/// (a clone of the one table), keeping the spans of the text it was parsed from.
#[derive(Clone, Debug)]
pub struct Document(toml_edit::ImDocument<String>);

impl Document {
    pub fn parse(text: &str) -> Result<Document, TomlError> {
        Ok(Document(toml_edit::ImDocument::parse(text.to_string())?))
    }

    /// The top-level keys, in the order written, with their spans.
    pub fn top_level_keys(&self) -> Vec<Spanned<String>> {
        let table = self.0.as_table();
        table
            .iter()
            .map(|(k, _)| {
                let span = table.key(k).and_then(|key| key.span()).unwrap_or(0..0);
                Spanned::new(span, k.to_string())
            })
            .collect()
    }

    /// Deserializes the value of top-level key `key` as a `T`, keeping the document's
    /// spans; `None` when the key is absent.
    pub fn table<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, TomlError> {
        let Some(item) = self.0.as_table().get(key) else { return Ok(None) };
        // A one-key document holding a copy of the table: its items keep their spans.
        let mut one = toml_edit::Table::new();
        one.insert(key, item.clone());
        let de = toml_edit::de::Deserializer::from(toml_edit::DocumentMut::from(one));
        Ok(serde::Deserializer::deserialize_map(de, Pick::<T> { key, _t: PhantomData })?)
    }

    /// Every `[[key]]` table of the document, each with its span.
    pub fn tables<T: DeserializeOwned>(&self, key: &str) -> Result<Vec<Spanned<T>>, TomlError> {
        Ok(self.table::<Vec<Spanned<T>>>(key)?.unwrap_or_default())
    }
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
        let doc = Document::parse(text).unwrap();
        let got = doc.tables::<T>("t").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&text[got[1].get_ref().name.span()], "\"b\"");
        let err = Document::parse("[[t]]\nnam = \"a\"\n").unwrap().tables::<T>("t").unwrap_err();
        assert_eq!(err.span, Some(6..9));
        let keys: Vec<String> = doc.top_level_keys().into_iter().map(|k| k.into_inner()).collect();
        assert_eq!(keys, ["workspace", "t", "other"]);
    }

    #[test]
    fn key_and_syntax_error_spans_point_into_the_text() {
        let text = "[[t]]\nname = \"a\"\n\n[[other]]\nx = 1\n";
        let doc = Document::parse(text).unwrap();
        let keys = doc.top_level_keys();
        assert_eq!(&text[keys[1].span()], "other");
        // The copy a table is read from keeps the original text's spans.
        let got = doc.tables::<T>("t").unwrap();
        assert_eq!(&text[got[0].get_ref().name.span()], "\"a\"");
        assert!(doc.table::<T>("absent").unwrap().is_none());
        let err = Document::parse("[[t]]\nname = = \"a\"\n").unwrap_err();
        assert_eq!(err.span, Some(13..14), "{err:?}");
    }
}
