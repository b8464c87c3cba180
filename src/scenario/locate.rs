//! Where things are in a scenario file: byte offsets to line and column, offsets to the dotted
//! path of the field there, and field paths back to their place in the text. Errors from the
//! deserializer carry only a byte span, and errors from validation carry only a field path, but
//! every error shown to a user names both.

use std::ops::Range;
use toml_edit::{ImDocument, Item, Key, TableLike, Value};

/// One key or array element of the document: its dotted path and where it was written.
#[derive(Clone, Debug)]
struct Node {
    /// Dotted path, such as `pipeline.producer.acks` or `faults[0].between[1][0]`.
    path: String,
    /// The key as written, if the node has a key of its own (array elements do not).
    key: Option<Range<usize>>,
    /// The value as written; a `[table]` or `[[table]]` is its header.
    value: Option<Range<usize>>,
    /// Whether the value is a table (standard, inline, or an element of an array of tables).
    is_table: bool,
}

/// An index from positions in a scenario's text to field paths, and back.
#[derive(Clone, Debug)]
pub(crate) struct DocIndex<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

/// A key segment as a path writes it: bare when it can be, quoted otherwise.
fn segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        segment(key)
    } else {
        format!("{parent}.{}", segment(key))
    }
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    // An empty span (`0..0`, an implicit table) contains its own start, so a zero-width error
    // at the start of a value still finds it.
    span.as_ref()
        .is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

impl<'a> DocIndex<'a> {
    /// Indexes `text`; a text that is not valid TOML gets an empty index (paths then come from
    /// the table headers around the offset, see [`DocIndex::path_at`]).
    pub(crate) fn new(text: &'a str) -> Self {
        let mut nodes = Vec::new();
        if let Ok(doc) = ImDocument::parse(text) {
            walk_table(doc.as_table(), "", &mut nodes);
        }
        DocIndex { text, nodes }
    }

    /// The dotted path of the innermost key or value written at `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> String {
        let span_len = |s: &Option<Range<usize>>| s.as_ref().map_or(usize::MAX, |r| r.len());
        let best = self
            .nodes
            .iter()
            .filter_map(|n| {
                let in_key = contains(&n.key, offset);
                let in_value = contains(&n.value, offset);
                let len = match (in_key, in_value) {
                    (true, _) => span_len(&n.key),
                    (false, true) => span_len(&n.value),
                    (false, false) => return None,
                };
                Some((len, n))
            })
            .min_by_key(|(len, _)| *len);
        match best {
            Some((_, node)) => node.path.clone(),
            None => self.path_from_headers(offset),
        }
    }

    /// The path of the table that starts at `offset` (where the deserializer places an error
    /// about a whole table, such as a missing field); the document itself if none does.
    pub(crate) fn table_at(&self, offset: usize) -> String {
        self.nodes
            .iter()
            .find(|n| n.is_table && n.value.as_ref().is_some_and(|v| v.start == offset))
            .map_or_else(String::new, |n| n.path.clone())
    }

    /// Where the value at `path` is written (or its key, or the nearest enclosing field that is
    /// written), as a byte offset.
    pub(crate) fn offset_of(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(node) = self.nodes.iter().find(|n| n.path == path) {
                if let Some(span) = node.value.as_ref().or(node.key.as_ref()) {
                    return span.start;
                }
            }
            match parent_path(path) {
                Some(parent) => path = parent,
                None => return 0,
            }
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // Step back to a character boundary so slicing cannot panic.
        let offset = (0..=offset)
            .rev()
            .find(|&o| self.text.is_char_boundary(o))
            .unwrap_or(0);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// A best-effort path for text that does not parse: the last table header before `offset`
    /// and the key on the offending line, if the line has one.
    fn path_from_headers(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let mut table = String::new();
        let mut array_counts: Vec<(String, usize)> = Vec::new();
        let mut line_start = 0;
        for line in self.text.split_inclusive('\n') {
            let line_end = line_start + line.len();
            let trimmed = line.trim();
            let is_error_line = offset >= line_start && offset < line_end.max(line_start + 1);
            if let Some(name) = trimmed
                .strip_prefix("[[")
                .and_then(|r| r.split("]]").next())
            {
                let name: String = name.split('.').map(str::trim).collect::<Vec<_>>().join(".");
                let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, c)) => {
                        *c += 1;
                        *c
                    }
                    None => {
                        array_counts.push((name.clone(), 0));
                        0
                    }
                };
                table = format!("{name}[{count}]");
            } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
                table = name.split('.').map(str::trim).collect::<Vec<_>>().join(".");
            } else if is_error_line {
                if let Some((key, _)) = trimmed.split_once('=') {
                    let key = key.trim().trim_matches('"');
                    if !key.is_empty() && !key.starts_with('#') {
                        return if table.is_empty() {
                            key.to_string()
                        } else {
                            format!("{table}.{key}")
                        };
                    }
                }
            }
            if is_error_line {
                break;
            }
            line_start = line_end;
        }
        table
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `` (the document).
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(i) = path.rfind('[') {
            return Some(&path[..i]);
        }
    }
    // A quoted last segment may itself hold dots; find the dot before it.
    let cut = if let Some(unquoted) = path.strip_suffix('"') {
        unquoted.rfind('"').and_then(|q| path[..q].rfind('.'))
    } else {
        path.rfind('.')
    };
    Some(cut.map_or("", |i| &path[..i]))
}

fn walk_table(table: &dyn TableLike, path: &str, nodes: &mut Vec<Node>) {
    for (name, _) in table.iter() {
        if let Some((key, item)) = table.get_key_value(name) {
            walk_item(key, item, &join(path, name), nodes);
        }
    }
}

fn walk_item(key: &Key, item: &Item, path: &str, nodes: &mut Vec<Node>) {
    nodes.push(Node {
        path: path.to_string(),
        key: key.span(),
        value: item.span(),
        is_table: item.is_table_like(),
    });
    match item {
        Item::None => {}
        Item::Value(value) => walk_value(value, path, nodes),
        Item::Table(table) => walk_table(table, path, nodes),
        Item::ArrayOfTables(array) => {
            for (i, table) in array.iter().enumerate() {
                let element = format!("{path}[{i}]");
                nodes.push(Node {
                    path: element.clone(),
                    key: None,
                    value: table.span(),
                    is_table: true,
                });
                walk_table(table, &element, nodes);
            }
        }
    }
}

fn walk_value(value: &Value, path: &str, nodes: &mut Vec<Node>) {
    match value {
        Value::InlineTable(table) => walk_table(table, path, nodes),
        Value::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                let element_path = format!("{path}[{i}]");
                nodes.push(Node {
                    path: element_path.clone(),
                    key: None,
                    value: element.span(),
                    is_table: element.is_inline_table(),
                });
                walk_value(element, &element_path, nodes);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"x\"\n\
        [pipeline]\n\
        producer = { acks = \"2\", linger = \"5ms\" }\n\
        [[faults]]\n\
        at = \"1m\"\n\
        [[faults]]\n\
        between = [\"cdc\", [\"broker-0\", \"broker-1\"]]\n\
        [slo]\n\
        \"bus.p99\" = \"1s\"\n";

    fn offset_of_text(needle: &str) -> usize {
        TEXT.find(needle).unwrap()
    }

    #[test]
    fn offsets_map_to_the_innermost_path() {
        let index = DocIndex::new(TEXT);
        assert_eq!(
            index.path_at(offset_of_text("\"2\"")),
            "pipeline.producer.acks"
        );
        assert_eq!(
            index.path_at(offset_of_text("acks")),
            "pipeline.producer.acks"
        );
        assert_eq!(
            index.path_at(offset_of_text("producer")),
            "pipeline.producer"
        );
        assert_eq!(index.path_at(offset_of_text("\"1m\"")), "faults[0].at");
        assert_eq!(
            index.path_at(offset_of_text("\"broker-1\"")),
            "faults[1].between[1][1]"
        );
        assert_eq!(index.path_at(offset_of_text("\"1s\"")), "slo.\"bus.p99\"");
        assert_eq!(index.path_at(offset_of_text("name")), "name");
    }

    #[test]
    fn paths_map_back_to_their_place() {
        let index = DocIndex::new(TEXT);
        let at = |path| index.line_column(index.offset_of(path));
        assert_eq!(at("pipeline.producer.acks"), (3, 21));
        assert_eq!(at("faults[1].between[1][0]"), (7, 20));
        // A field that is not written points at the nearest enclosing one that is.
        assert_eq!(at("faults[0].target"), (4, 1));
        assert_eq!(at("slo.\"bus.p99\""), (9, 13));
        assert_eq!(at("workload.rate_per_s"), (1, 1));
    }

    #[test]
    fn unparsable_text_falls_back_to_headers() {
        let text = "name = \"x\"\n[pipeline]\nproducer = { acks = all }\n";
        let index = DocIndex::new(text);
        assert_eq!(
            index.path_at(text.find("all").unwrap()),
            "pipeline.producer"
        );
        let text = "[[faults]]\nat = 1\n[[faults]]\nkind = crash\n";
        let index = DocIndex::new(text);
        assert_eq!(index.path_at(text.find("crash").unwrap()), "faults[1].kind");
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a.b"), Some("a"));
        assert_eq!(parent_path("slo.\"bus.p99\""), Some("slo"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }
}
