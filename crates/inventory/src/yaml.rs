//! A positioned YAML tree built from `yaml-rust2` events.
//!
//! Serde-style loaders drop positions and collapse duplicate keys; diagnostics need both,
//! so mappings here keep every entry in file order and every node keeps its line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; real inventories use fewer than 10 levels.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes accepted, aliases counted expanded (guards against alias bombs).
pub(crate) const MAX_NODES: usize = 200_000;

/// One YAML node with the 1-based line and column where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub line: usize,
    pub col: usize,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// `plain` is false for quoted and block scalars: they are never null.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are kept.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain empty, `~` or `null` scalar (YAML 1.1 and 1.2 agree on these).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name of the node's shape for messages.
    pub fn shape(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Malformed YAML: the parser's message and where it stopped (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

enum Frame {
    Seq {
        start: Marker,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Marker,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parses the first document of `text`; `Ok(None)` for an empty stream.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let err = |message: &str| YamlError {
            line: mark.line(),
            col: mark.col() + 1,
            message: message.to_string(),
        };
        let (node, anchor) = match event {
            Event::StreamEnd => return Ok(root),
            Event::DocumentStart if root.is_some() => {
                return Err(err("a second YAML document; an inventory is one document"));
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                continue;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err("nesting is too deep"));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq {
                        start: mark,
                        anchor,
                        items: Vec::new(),
                    },
                    _ => Frame::Map {
                        start: mark,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    },
                });
                continue;
            }
            Event::Scalar(text, style, anchor, _) => {
                let plain = matches!(style, TScalarStyle::Plain);
                (at(mark, Kind::Scalar { text, plain }), anchor)
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) => (at(start, Kind::Seq(items)), anchor),
                Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    ..
                }) => (at(start, Kind::Map(entries)), anchor),
                None => return Err(err("unbalanced end of a collection")),
            },
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(err("alias to an unknown anchor"));
                };
                let mut node = target.clone();
                node.line = mark.line();
                node.col = mark.col() + 1;
                nodes += node.size();
                (node, 0)
            }
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(err("document is too large (too many nodes)"));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn at(mark: Marker, kind: Kind) -> Node {
    Node {
        line: mark.line(),
        col: mark.col() + 1,
        kind,
    }
}
