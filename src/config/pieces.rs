//! A big resource file parsed and deserialized in pieces. The toml crate lexes a whole document
//! into a token array and an event array before it builds the document, and the document is
//! many times the text: for a 3.7 MiB file (10,000 entries of each kind) the three peak at
//! 88 MiB, memory the process has just given back after the last load and must fault in again.
//! A piece at a time, they stay a few hundred KiB, reused from piece to piece, and what is
//! left is the raw shapes of the file.
//!
//! A piece ends before a `[[name]]` line (an array-of-tables header with one bare key), and the
//! pieces join as the whole file would: each such array goes on with the elements of the next
//! piece. Whatever a piece could mean otherwise is left to the whole: a piece that does not
//! parse on its own (the cut fell in a multi-line string or array), or a key that two pieces
//! both define in any other way, and [`parse`] says `None`.
//!
//! The spans of what it returns are relative to each piece: it serves a file without
//! problems only. A problem is looked for again in the whole file, whose spans give its line
//! and column.

use std::collections::HashSet;

use toml::de::{DeTable, DeValue};

use super::raw;

/// About this much text is parsed at once: its arrays fit in the cache.
pub(super) const PIECE: usize = 16 << 10;

/// The raw shapes of `text`, from pieces of about `piece` bytes; `None` when the pieces do not
/// join as the whole would, or a piece has a problem.
pub(super) fn parse(text: &str, piece: usize) -> Option<raw::File> {
    let mut file: Option<raw::File> = None;
    join(text, piece, |table| {
        let more = super::shaped(toml::Spanned::new(0..0, table))?;
        match &mut file {
            None => file = Some(more),
            Some(file) => file.append(more)?,
        }
        Some(())
    })?;
    file
}

/// Parses `text` in pieces of about `piece` bytes and hands each piece's table to `each`, in
/// order, when the tables join as the whole would; `None` when they do not, a piece does not
/// parse, or `each` says `None`.
fn join<'i>(
    text: &'i str,
    piece: usize,
    mut each: impl FnMut(DeTable<'i>) -> Option<()>,
) -> Option<()> {
    // Parsed a few pieces ahead on a thread of its own, on another core while `each` takes
    // the piece before (a 10,000-entry file: 145 ms to 120 ms from write to reloaded).
    std::thread::scope(|scope| {
        let (send, parsed) = std::sync::mpsc::sync_channel(AHEAD);
        scope.spawn(move || {
            for part in pieces(text, piece) {
                let table = DeTable::parse(part).ok().map(|t| t.into_inner());
                let failed = table.is_none();
                // Stops when this piece failed or `join` does not want more.
                if send.send(table).is_err() || failed {
                    return;
                }
            }
        });
        // The top-level keys so far, and the arrays of tables among them that a piece after
        // the first began: the next piece may go on with those.
        let mut seen: HashSet<String> = HashSet::new();
        let mut open: HashSet<String> = HashSet::new();
        for (i, table) in parsed.into_iter().enumerate() {
            let table = table?;
            for (key, value) in table.iter() {
                // After the first piece, every top-level array is an array of tables: each
                // piece but the first begins with a table header, so no top-level key-value
                // follows.
                let name: &str = key.get_ref();
                let array = matches!(value.get_ref(), DeValue::Array(_));
                if seen.insert(name.to_owned()) {
                    if i > 0 && array {
                        open.insert(name.to_owned());
                    }
                } else if !(array && open.contains(name)) {
                    return None;
                }
            }
            each(table)?;
        }
        Some(())
    })
}

/// How many parsed pieces may wait for [`join`]'s caller.
const AHEAD: usize = 2;

/// `text` cut into pieces of at least `piece` bytes, each cut before a `[[name]]` line; the
/// first piece ends at the first such line, empty when the text begins with one (so that
/// every array of tables begins after it).
fn pieces(text: &str, piece: usize) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut lines = text.split_inclusive('\n');
    let mut at = 0;
    let mut first = true;
    std::iter::from_fn(move || {
        if start == text.len() {
            return None;
        }
        for line in lines.by_ref() {
            let here = at;
            at += line.len();
            if is_cut(line) && (first || here - start >= piece.max(1)) {
                first = false;
                let part = &text[start..here];
                start = here;
                return Some(part);
            }
        }
        let part = &text[start..];
        start = text.len();
        Some(part)
    })
}

/// `[[name]]` with one bare key, then nothing but a comment.
fn is_cut(line: &str) -> bool {
    let Some((name, rest)) = line
        .strip_prefix("[[")
        .and_then(|line| line.split_once("]]"))
    else {
        return false;
    };
    let rest = rest.trim();
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && (rest.is_empty() || rest.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a document means, without its spans.
    fn meaning(table: DeTable<'_>) -> toml::Table {
        let document = toml::de::Deserializer::from(toml::Spanned::new(0..0, table));
        serde::Deserialize::deserialize(document).expect("a document is a table")
    }

    fn whole(text: &str) -> Option<toml::Table> {
        DeTable::parse(text).ok().map(|t| meaning(t.into_inner()))
    }

    /// The pieces' tables as [`join`] hands them over, put together: arrays go on.
    fn joined(text: &str, piece: usize) -> Option<toml::Table> {
        let mut all = toml::Table::new();
        join(text, piece, |table| {
            for (key, value) in meaning(table) {
                match (all.get_mut(&key), value) {
                    (Some(toml::Value::Array(items)), toml::Value::Array(more)) => {
                        items.extend(more)
                    }
                    (_, value) => drop(all.insert(key, value)),
                }
            }
            Some(())
        })?;
        Some(all)
    }

    /// In pieces of every size from 1 byte to the whole, `text` parses as the whole does or not
    /// at all; and in 1-byte pieces (a cut at every `[[name]]` line) it parses when `joins`.
    fn same(text: &str, joins: bool) {
        let expected = whole(text);
        for piece in 1..=text.len() + 1 {
            if let Some(table) = joined(text, piece) {
                assert_eq!(Some(table), expected, "piece {piece} of {text:?}");
            }
        }
        assert_eq!(joined(text, 1).is_some(), joins, "{text:?}");
    }

    #[test]
    fn arrays_of_tables_go_on_across_pieces_in_order() {
        let text = "a = 1\n[t]\nx = 1\n[[c]]\nid = 1\n[c.sub]\ny = 2\n[[r]]\np = \"/\"\n\
                    [[c]] # again\nid = 2\n[[c.keys]]\nk = 1\n[[r]]\np = \"/b\"\n[[c]]\r\nid = 3\r\n";
        same(text, true);
        let table = joined(text, 1);
        let c = table
            .as_ref()
            .and_then(|t| t.get("c"))
            .and_then(|c| c.as_array());
        assert_eq!(c.map(|c| c.len()), Some(3));
    }

    #[test]
    fn what_the_whole_would_mean_otherwise_is_left_to_the_whole() {
        for (text, joins) in [
            // A cut inside a multi-line string: the piece before it does not parse.
            ("[[c]]\nd = \"\"\"\n[[c]]\n\"\"\"\n", false),
            ("[[c]]\nd = '''\n[[c]]\n'''\n", false),
            ("[[c]]\nd = [\n[[c]]\n]\n", false),
            // An inline array is not an array of tables: the whole says no.
            ("c = [1]\n[[c]]\nid = 1\n", false),
            ("c = [{id = 1}]\n[[c]]\nid = 2\n", false),
            // A table the whole goes on with: valid, but joined only by the whole.
            ("[[c]]\nid = 1\n[[r]]\n[c.more]\nx = 1\n", false),
            ("[[c]]\nid = 1\n[[r]]\n[[c.more]]\nx = 1\n", false),
            ("[t]\nx = 1\n[[c]]\n[t.u]\ny = 1\n", false),
            // Defined twice: the whole says no.
            ("[t]\nx = 1\n[[c]]\n[t]\ny = 1\n", false),
            ("[[c]]\n[r]\n[[r]]\n", false),
            ("[[c]]\n[[r]]\n[r]\nx = 1\n", false),
            // Not a cut: quoted, dotted or spaced names, or text after the header.
            ("[[\"c\"]]\nid = 1\n[[c]]\nid = 2\n", false),
            ("[[t.c]]\nid = 1\n[[t.c]]\nid = 2\n", true),
            ("[[ c ]]\nid = 1\n[[c]]\nid = 2\n", false),
            ("[[c]]\nid = 1\n[[c]] x = 1\n", false),
            // Each piece parses, but the whole does not.
            ("[[c]]\nid = 1\n[[c]]\nid = 2\nid = 3\n", false),
            ("[[c]]\nid = 1\n[[c]]\nid = \n", false),
        ] {
            same(text, joins);
        }
    }

    #[test]
    fn a_big_file_is_cut_where_its_pieces_are_long_enough() {
        let text: String = (0..1000)
            .map(|i| format!("[[c]]\nid = \"client-{i}\"\n[[r]]\np = \"/{i}\"\n"))
            .collect();
        let cuts: Vec<&str> = pieces(&text, 4096).collect();
        assert!(cuts.len() > 5 && cuts.len() < 20, "{}", cuts.len());
        assert_eq!(cuts.concat(), text);
        assert_eq!(joined(&text, 4096), whole(&text));
    }
}
