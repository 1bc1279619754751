//! Inventory variables: values as written, with the line they were set on.

use crate::yaml::{Kind, Node};

/// A variable's value, kept as text: Ansible decides types late, and so do we.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Empty, `~` or `null`.
    Null,
    /// Any scalar, as written (without quotes).
    Text(String),
    /// A YAML list.
    List(Vec<Value>),
    /// A YAML mapping, entries in file order (keys that are not scalars are dropped).
    Map(Vec<(String, Value)>),
}

impl Value {
    pub(crate) fn from_node(node: &Node) -> Self {
        match &node.kind {
            _ if node.is_null() => Value::Null,
            Kind::Scalar { text, .. } => Value::Text(text.clone()),
            Kind::Seq(items) => Value::List(items.iter().map(Value::from_node).collect()),
            Kind::Map(entries) => Value::Map(
                entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.scalar()?.to_string(), Value::from_node(v))))
                    .collect(),
            ),
        }
    }

    /// The text of a scalar value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The value read as an Ansible boolean (`yes`/`no`, `true`/`false`, `on`/`off`,
    /// `y`/`n`, `1`/`0`, any case); `None` if it is not one.
    pub fn as_bool(&self) -> Option<bool> {
        parse_bool(self.as_text()?)
    }
}

/// Reads an Ansible-style truthy or falsy word.
///
/// ```
/// use sqlraft_inventory::parse_bool;
/// assert_eq!(parse_bool("Yes"), Some(true));
/// assert_eq!(parse_bool("off"), Some(false));
/// assert_eq!(parse_bool("maybe"), None);
/// ```
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "t" | "on" | "1" => Some(true),
        "no" | "n" | "false" | "f" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// One variable as set in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    /// The variable name.
    pub name: String,
    /// Its value.
    pub value: Value,
    /// The 1-based line it was set on.
    pub line: usize,
}

/// Variables in file order. Later entries win over earlier ones with the same name, which
/// is how precedence is applied: lower-precedence sources are pushed first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars(Vec<Var>);

impl Vars {
    /// The winning definition of `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.0.iter().rev().find(|v| v.name == name)
    }

    /// The winning value of `name` as text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)?.value.as_text()
    }

    /// Every definition, in the order they were added (shadowed ones included).
    pub fn iter(&self) -> impl Iterator<Item = &Var> {
        self.0.iter()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, var: Var) {
        self.0.push(var);
    }

    pub(crate) fn extend_from(&mut self, other: &Vars) {
        self.0.extend(other.0.iter().cloned());
    }
}
