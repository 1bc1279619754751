//! From the positioned YAML tree to the [`Inventory`] model, reporting wrong shapes.
//!
//! Loading never stops at the first problem: a bad part is reported and skipped, and
//! the rest is still read so validation can report everything at once.

use crate::diagnostic::{Code, Sink};
use crate::model::{ALL_GROUP, Group, HostEntry, Inventory};
use crate::vars::{Value, Var, Vars};
use crate::yaml::{Kind, Node};

const GROUP_KEYS: &str = "expected `hosts`, `vars` or `children`";

/// Returns the model and whether the top level could be read at all (if not, the
/// semantic rules would only repeat the same problem).
pub(crate) fn load(file: &str, root: Option<&Node>, sink: &mut Sink) -> (Inventory, bool) {
    let mut loader = Loader {
        inv: Inventory {
            file: file.to_string(),
            ..Inventory::default()
        },
        sink,
        path: Vec::new(),
    };
    loader.inv.groups.push(Group {
        name: ALL_GROUP.to_string(),
        ..Group::default()
    });
    match root {
        None => loader.sink.error(
            Code::Shape,
            None,
            None,
            "the inventory is empty; it needs `all:` with `children:` holding `kuma_core`".into(),
        ),
        Some(node) => loader.top_level(node),
    }
    let readable = root.is_some_and(|r| matches!(r.kind, Kind::Map(_)));
    (loader.inv, readable)
}

struct Loader<'s> {
    inv: Inventory,
    sink: &'s mut Sink,
    /// Groups being read, outermost first: a group nested in itself is a cycle.
    path: Vec<String>,
}

impl Loader<'_> {
    /// Top-level keys: `all`, and other blocks that Ansible treats as groups under `all`.
    fn top_level(&mut self, root: &Node) {
        let Some(entries) = self.mapping(root, "the inventory") else {
            return;
        };
        for (key, body) in self.unique_keys(entries, "at the top level") {
            if key.0 == ALL_GROUP {
                if let Some(all) = self.inv.groups.iter_mut().find(|g| g.name == ALL_GROUP) {
                    all.line = Some(key.1);
                }
                self.group_body(ALL_GROUP, body);
            } else {
                self.group(key.0, key.1, ALL_GROUP, body);
            }
        }
    }

    fn group(&mut self, name: &str, line: usize, parent: &str, body: &Node) {
        if name == ALL_GROUP || self.path.iter().any(|p| p == name) {
            let message = if name == ALL_GROUP {
                format!("`all` holds every group; it cannot be nested in `{parent}`")
            } else {
                format!("group `{name}` is nested in itself")
            };
            self.sink.error(Code::GroupCycle, Some(line), None, message);
            return;
        }
        let index = match self.inv.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.inv.groups.push(Group {
                    name: name.to_string(),
                    line: Some(line),
                    ..Group::default()
                });
                self.inv.groups.len() - 1
            }
        };
        let group = &mut self.inv.groups[index];
        if !group.parents.iter().any(|p| p == parent) {
            group.parents.push(parent.to_string());
        }
        self.path.push(name.to_string());
        self.group_body(name, body);
        self.path.pop();
    }

    fn group_body(&mut self, name: &str, body: &Node) {
        if body.is_null() {
            return;
        }
        let Kind::Map(entries) = &body.kind else {
            let hint = if matches!(body.kind, Kind::Seq(_)) {
                "; list its hosts under `hosts:` as a mapping (`host.example.com:`)"
            } else {
                ""
            };
            self.shape_error(
                body,
                format!("group `{name}` is {}; {GROUP_KEYS}{hint}", body.shape()),
            );
            return;
        };
        for ((key, line), value) in self.unique_keys(entries, &format!("in group `{name}`")) {
            match key {
                "hosts" => self.hosts(name, value),
                "vars" => {
                    let vars = self.vars(value, &format!("`vars` of group `{name}`"));
                    if let Some(g) = self.inv.groups.iter_mut().find(|g| g.name == name) {
                        g.vars.extend_from(&vars);
                    }
                }
                "children" => self.children(name, value),
                other => {
                    let hint = if other.contains('.') {
                        " (a host? list hosts under `hosts:`)"
                    } else {
                        ""
                    };
                    self.sink.error(
                        Code::Shape,
                        Some(line),
                        None,
                        format!("unknown key `{other}` in group `{name}`{hint}; {GROUP_KEYS}"),
                    );
                }
            }
        }
    }

    fn hosts(&mut self, group: &str, node: &Node) {
        if node.is_null() {
            return;
        }
        let Kind::Map(entries) = &node.kind else {
            self.shape_error(
                node,
                format!(
                    "`hosts` of group `{group}` is {}; write each host as a key \
                     (`host.example.com:`) with its variables under it",
                    node.shape()
                ),
            );
            return;
        };
        // Duplicate host keys are kept: validation reports them with both lines.
        for (key, value) in entries {
            let Some(name) = self.key_text(key) else {
                continue;
            };
            let vars = if value.is_null() {
                Vars::default()
            } else if matches!(value.kind, Kind::Map(_)) {
                self.vars(value, &format!("host `{name}`"))
            } else {
                self.sink.error(
                    Code::Shape,
                    Some(value.line),
                    Some(&name),
                    format!(
                        "the host's variables are {}; write them as a mapping (`name: value`) \
                         or leave the host empty",
                        value.shape()
                    ),
                );
                Vars::default()
            };
            self.inv.hosts.push(HostEntry {
                name,
                line: key.line,
                group: group.to_string(),
                vars,
            });
        }
    }

    fn children(&mut self, parent: &str, node: &Node) {
        if node.is_null() {
            return;
        }
        let Some(entries) = self.mapping(node, &format!("`children` of group `{parent}`")) else {
            return;
        };
        for ((name, line), body) in
            self.unique_keys(entries, &format!("in `children` of `{parent}`"))
        {
            self.group(name, line, parent, body);
        }
        if let Some(g) = self.inv.groups.iter_mut().find(|g| g.name == parent) {
            for (key, _) in entries {
                if let Some(name) = key.scalar()
                    && !g.children.iter().any(|c| c == name)
                {
                    g.children.push(name.to_string());
                }
            }
        }
    }

    fn vars(&mut self, node: &Node, what: &str) -> Vars {
        let mut vars = Vars::default();
        if node.is_null() {
            return vars;
        }
        let Some(entries) = self.mapping(node, what) else {
            return vars;
        };
        for ((name, line), value) in self.unique_keys(entries, &format!("in {what}")) {
            vars.push(Var {
                name: name.to_string(),
                value: Value::from_node(value),
                line,
            });
        }
        vars
    }

    /// The entries of a mapping, or an error naming `what` if `node` is something else.
    fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            _ => {
                self.shape_error(
                    node,
                    format!("{what} is {}; expected a mapping", node.shape()),
                );
                None
            }
        }
    }

    /// Entries with scalar keys, first occurrence of each key only; repeats are errors.
    fn unique_keys<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        place: &str,
    ) -> Vec<((&'n str, usize), &'n Node)> {
        let mut out: Vec<((&str, usize), &Node)> = Vec::new();
        for (key, value) in entries {
            let Some(text) = key.scalar() else {
                self.shape_error(
                    key,
                    format!("a key {place} is {}; keys are names", key.shape()),
                );
                continue;
            };
            if let Some(((_, first), _)) = out.iter().find(|((k, _), _)| *k == text) {
                self.sink.error(
                    Code::DuplicateKey,
                    Some(key.line),
                    None,
                    format!("`{text}` appears twice {place} (first at line {first}); keep one"),
                );
                continue;
            }
            out.push(((text, key.line), value));
        }
        out
    }

    fn key_text(&mut self, key: &Node) -> Option<String> {
        match key.scalar() {
            Some(text) => Some(text.to_string()),
            None => {
                self.shape_error(
                    key,
                    format!("a host name is {}; expected a name", key.shape()),
                );
                None
            }
        }
    }

    fn shape_error(&mut self, node: &Node, message: String) {
        self.sink.error(Code::Shape, Some(node.line), None, message);
    }
}
