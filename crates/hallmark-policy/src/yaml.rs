//! A small YAML tree that remembers the line of every node.
//!
//! Policy errors must name the line of the group, block or rule they are
//! about, and a mapping's duplicate keys must be refused with our own words,
//! so the document is built here from the parser's events rather than through
//! a generic value type. Anchors, aliases and tags are refused: a policy is
//! read by people in review, and an alias makes one line mean two places.

use std::borrow::Cow;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting accepted. A policy document is four levels deep; the cap
/// keeps hostile input from exhausting the stack of whoever walks the tree.
const MAX_DEPTH: usize = 32;

/// One node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub line: usize,
    pub value: Value,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A scalar's text; `plain` when it was written unquoted (only a plain
    /// scalar can be YAML's null).
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in document order. Keys are scalars; duplicates are kept
    /// here and refused by the reader, which can say what the key names.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// Whether this is YAML's null (`~`, `null` or nothing, unquoted).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The node's kind in words, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        if self.is_null() {
            return "nothing";
        }
        match self.value {
            Value::Scalar { .. } => "a scalar",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a map",
        }
    }
}

/// Why the text is not a YAML document we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Parses one YAML document. An empty stream is `Ok(None)`.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder::default();
    // The scanner may report an error at end of input one line past the
    // last; a message names a line of the file.
    let last_line = 1 + text.replace("\r\n", "\n").matches(['\n', '\r']).count();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line().clamp(1, last_line),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.root)
}

/// A collection being built.
enum Open {
    Sequence(usize, Vec<Node>),
    /// Entries so far and a key waiting for its value.
    Mapping(usize, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let line = span.start.line();
        let refuse = |message: &str| {
            Err(YamlError {
                line,
                message: message.to_string(),
            })
        };
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return refuse("a policy file holds one YAML document, found a second");
                }
                Ok(())
            }
            Event::Alias(_) => refuse("YAML aliases (`*name`) are not supported in a policy"),
            Event::Scalar(text, style, anchor, tag) => {
                check_plain(anchor, tag.is_some(), line)?;
                let node = Node {
                    line,
                    value: Value::Scalar {
                        text: Cow::into_owned(text),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                self.add(node)
            }
            Event::SequenceStart(anchor, tag) => {
                check_plain(anchor, tag.is_some(), line)?;
                self.open(Open::Sequence(line, Vec::new()), line)
            }
            Event::MappingStart(anchor, tag) => {
                check_plain(anchor, tag.is_some(), line)?;
                self.open(Open::Mapping(line, Vec::new(), None), line)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Sequence(line, items)) => Node {
                        line,
                        value: Value::Sequence(items),
                    },
                    Some(Open::Mapping(line, entries, None)) => Node {
                        line,
                        value: Value::Mapping(entries),
                    },
                    // The parser never closes a mapping between a key and its
                    // value, nor closes what it did not open.
                    Some(Open::Mapping(_, _, Some(_))) | None => {
                        return refuse("unbalanced YAML collection")
                    }
                };
                self.add(node)
            }
        }
    }

    fn open(&mut self, open: Open, line: usize) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                line,
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(open);
        Ok(())
    }

    fn add(&mut self, node: Node) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Open::Sequence(_, items)) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Mapping(_, entries, pending)) => match pending.take() {
                None => {
                    let Value::Scalar { .. } = &node.value else {
                        return Err(YamlError {
                            line: node.line,
                            message: "map keys must be scalars".to_string(),
                        });
                    };
                    *pending = Some(node);
                    Ok(())
                }
                Some(key) => {
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

fn check_plain(anchor: usize, tagged: bool, line: usize) -> Result<(), YamlError> {
    if anchor != 0 {
        return Err(YamlError {
            line,
            message: "YAML anchors (`&name`) are not supported in a policy".to_string(),
        });
    }
    if tagged {
        return Err(YamlError {
            line,
            message: "YAML tags (`!tag`) are not supported in a policy".to_string(),
        });
    }
    Ok(())
}
