//! YAML documents with positions.
//!
//! A file is parsed once (serde-saphyr) into a tree whose every node remembers its line and
//! column. The tree becomes a plain `serde_json::Value`, which the typed structs deserialize from,
//! and a [`PositionIndex`] from field path (`spec.properties[2].visitors`) to position, which
//! turns any error about a path into `file:line:column`.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and column, both 1-based. `0:0` means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<serde_saphyr::Location> for Pos {
    fn from(l: serde_saphyr::Location) -> Self {
        Pos {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// Where the parts of one document are: the position of each value and of each map key.
///
/// Built on first use, not at load: positions are only needed for diagnostics, and a table of
/// every field path of every device is most of what loading a site costs in memory (about
/// 40 KB per 30-property device). Until then it holds the file's text, shared by its documents;
/// the first lookup parses the file again and indexes all its documents at once.
#[derive(Debug, Clone, Default)]
pub struct PositionIndex {
    file: Option<std::sync::Arc<FileIndex>>,
    doc: usize,
}

#[derive(Debug)]
struct FileIndex {
    text: std::sync::Arc<str>,
    tables: std::sync::OnceLock<Vec<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl PositionIndex {
    fn table(&self) -> Option<&Table> {
        let file = self.file.as_ref()?;
        file.tables
            .get_or_init(|| match parse_roots(&file.text) {
                Ok(roots) => roots
                    .into_iter()
                    .map(|root| {
                        let mut t = Table::default();
                        index(root, String::new(), &mut t);
                        t
                    })
                    .collect(),
                // It parsed the first time; the text has not changed since.
                Err(_) => Vec::new(),
            })
            .get(self.doc)
    }

    /// The position of the value at `path`, or of its nearest ancestor that has one.
    pub fn value(&self, path: &str) -> Pos {
        let Some(t) = self.table() else {
            return Pos::default();
        };
        let mut p = path;
        loop {
            if let Some(pos) = t.values.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return t.values.get("").copied().unwrap_or_default(),
            }
        }
    }

    /// The position of the key that names `path` (falls back to the value's position).
    pub fn key(&self, path: &str) -> Pos {
        self.table()
            .and_then(|t| t.keys.get(path).copied())
            .unwrap_or_else(|| self.value(path))
    }
}

/// The parent of a path: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `""`, `""` → None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// Joins a map key onto a path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a sequence index onto a path.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// One YAML document: its value and where its parts are.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON (YAML 1.2 core schema scalars).
    pub value: serde_json::Value,
    /// Positions of every value and key in the document.
    pub positions: PositionIndex,
}

/// A YAML syntax error, with its position when known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What the parser said, on one line.
    pub message: String,
}

/// Largest file the loader parses; a bigger one is refused rather than read into memory.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Parses every document of a YAML text. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut docs = Vec::new();
    parse_each(text, |d| docs.push(d))?;
    Ok(docs)
}

/// Parses the documents of a YAML text one at a time, handing each to `f` before the next is
/// read: a site file of a thousand devices never has all of them in memory as JSON at once.
/// Empty documents are skipped. On a syntax error `f` may have seen the documents before it.
pub fn parse_each(text: &str, mut f: impl FnMut(Document)) -> Result<(), SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError {
            pos: Pos::default(),
            message: format!(
                "file is {} bytes, larger than the {} bytes a device file may have",
                text.len(),
                MAX_FILE_BYTES
            ),
        });
    }
    let file = std::sync::Arc::new(FileIndex {
        text: text.into(),
        tables: std::sync::OnceLock::new(),
    });
    let mut reader = text.as_bytes();
    for (doc, value) in
        serde_saphyr::read_with_options::<_, Plain>(&mut reader, options()).enumerate()
    {
        let Plain(value) = value.map_err(syntax_error)?;
        f(Document {
            value,
            positions: PositionIndex {
                file: Some(file.clone()),
                doc,
            },
        });
    }
    Ok(())
}

/// Parser options: YAML 1.2 core booleans only (`n`, `y`, `on`, `off`, a parity of `N`, a key
/// `y` stay text). Budgets sized for the largest file accepted (MAX_FILE_BYTES): a site file
/// with thousands of devices is normal; alias expansion keeps its default limits (alias bombs).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_nodes: 8_000_000,
            max_events: 32_000_000,
            max_documents: 100_000,
        },
    }
}

fn syntax_error(e: serde_saphyr::Error) -> SyntaxError {
    let pos = e.location().map(Pos::from).unwrap_or_default();
    let rendered = e.without_snippet().to_string();
    let message = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    SyntaxError { pos, message }
}

/// Parses the documents of a text into trees with positions (for the position index only:
/// loading reads values straight into JSON, without the positions).
fn parse_roots(text: &str) -> Result<Vec<Spanned<Node>>, SyntaxError> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(syntax_error)
}

/// A YAML value read straight into JSON, with the same scalar rules as [`Node`] (map keys as
/// text, integers too large for 64 bits and NaN/infinities as their spelling).
struct Plain(serde_json::Value);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_json::Value;
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Plain;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Plain, E> {
                Ok(Plain(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Plain, E> {
                Ok(Plain(Value::Null))
            }
            fn visit_some<D2: de::Deserializer<'de>>(self, d: D2) -> Result<Plain, D2::Error> {
                Plain::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Plain, E> {
                Ok(Plain(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Plain, E> {
                Ok(Plain(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Plain, E> {
                Ok(Plain(Value::from(v)))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Plain, E> {
                Ok(Plain(i64::try_from(v).map_or_else(
                    |_| Value::String(v.to_string()),
                    Value::from,
                )))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Plain, E> {
                Ok(Plain(u64::try_from(v).map_or_else(
                    |_| Value::String(v.to_string()),
                    Value::from,
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Plain, E> {
                // NaN and infinities have no JSON form; keep them as their YAML spelling.
                Ok(Plain(serde_json::Number::from_f64(v).map_or_else(
                    || Value::String(v.to_string()),
                    Value::Number,
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Plain, E> {
                Ok(Plain(Value::String(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Plain, E> {
                Ok(Plain(Value::String(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Plain, E> {
                Ok(Plain(Value::String(
                    String::from_utf8_lossy(v).into_owned(),
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
                let mut items = Vec::new();
                while let Some(Plain(item)) = seq.next_element::<Plain>()? {
                    items.push(item);
                }
                Ok(Plain(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
                let mut entries = serde_json::Map::new();
                while let Some(KeyText(key)) = map.next_key::<KeyText>()? {
                    let Plain(value) = map.next_value::<Plain>()?;
                    entries.insert(key, value);
                }
                Ok(Plain(Value::Object(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Records the position of every value and key of a tree under its path.
fn index(node: Spanned<Node>, path: String, t: &mut Table) {
    let at = node.referenced.into();
    match node.value {
        Node::Seq(items) => {
            for (i, item) in items.into_iter().enumerate() {
                index(item, join_index(&path, i), t);
            }
        }
        Node::Map(entries) => {
            for (key, value) in entries {
                let child = join_key(&path, &key.value);
                t.keys.insert(child.clone(), key.referenced.into());
                index(value, child, t);
            }
        }
        Node::Scalar => {}
    }
    t.values.insert(path, at);
}

/// A YAML node whose children carry positions (what the position index walks; the values
/// themselves are read by [`Plain`]).
#[derive(Debug)]
enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

/// A map key: any scalar, read as text (`1: x` has the key `"1"`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D2: de::Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    let key = Spanned::new(key.value.0, key.referenced, key.defined);
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_values_and_keys() {
        let text = "a: 1\nspec:\n  list:\n    - x: hello\n      y: [1, 2]\n      n: off\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.value["spec"]["list"][0]["x"], "hello");
        assert_eq!(
            d.positions.value("spec.list[0].x"),
            Pos {
                line: 4,
                column: 10
            }
        );
        assert_eq!(
            d.positions.key("spec.list[0].y"),
            Pos { line: 5, column: 7 }
        );
        // YAML 1.1 booleans are text.
        assert_eq!(d.value["spec"]["list"][0]["n"], "off");
        // A path that does not exist falls back to its nearest ancestor.
        assert_eq!(
            d.positions.value("spec.list[0].x.missing"),
            Pos {
                line: 4,
                column: 10
            }
        );
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["b"], 2);
        assert_eq!(docs[1].positions.value("b").line, 4);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(!err.message.is_empty());
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let docs = parse_documents("s: \"5502\"\nn: 5502\nb: true\nf: 0.1\nz: ~\n").unwrap();
        let v = &docs[0].value;
        assert_eq!(v["s"], "5502");
        assert_eq!(v["n"], 5502);
        assert_eq!(v["b"], true);
        assert_eq!(v["f"], 0.1);
        assert!(v["z"].is_null());
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
