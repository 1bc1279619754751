//! The entry points: read, load and validate an inventory; hand out a valid one.

use std::path::Path;

use crate::diagnostic::{Code, Diagnostics, Sink};
use crate::model::{CORE_GROUP, HostSettings, Inventory, PEERS_GROUP, var};
use crate::{InventoryError, RaftAddr, load, validate, yaml};

/// Largest inventory accepted; real ones are a few kilobytes.
pub const MAX_INVENTORY_BYTES: usize = 4 * 1024 * 1024;

/// The result of checking one inventory: the model (as far as it could be read) and
/// every finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The model; partial when the file had shape errors, empty on malformed YAML.
    pub inventory: Inventory,
    /// Every finding, sorted by line.
    pub diagnostics: Diagnostics,
}

/// Checks inventory `text`; `file` is the name diagnostics show. Never fails and never
/// panics: every problem becomes a diagnostic.
pub fn check(file: &str, text: &str) -> Checked {
    let mut sink = Sink::new(file);
    let empty = || Inventory {
        file: file.to_string(),
        ..Inventory::default()
    };
    if text.len() > MAX_INVENTORY_BYTES {
        sink.error(
            Code::Shape,
            None,
            None,
            format!(
                "the inventory is {} bytes; at most {MAX_INVENTORY_BYTES} are accepted",
                text.len()
            ),
        );
        return Checked {
            inventory: empty(),
            diagnostics: sink.finish(),
        };
    }
    let inventory = match yaml::parse(text) {
        Ok(root) => {
            let (inventory, readable) = load::load(file, root.as_ref(), &mut sink);
            if readable {
                validate::validate(&inventory, &mut sink);
            }
            inventory
        }
        Err(e) => {
            sink.error(
                Code::Yaml,
                Some(e.line),
                None,
                format!(
                    "malformed YAML at line {}, column {}: {}",
                    e.line, e.col, e.message
                ),
            );
            empty()
        }
    };
    Checked {
        inventory,
        diagnostics: sink.finish(),
    }
}

/// Reads and checks the inventory at `path`; only reading can fail.
pub fn check_file(path: &Path) -> Result<Checked, InventoryError> {
    let read_err = |source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = path.display().to_string();
    let bytes = std::fs::metadata(path).map_err(read_err)?.len();
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    if bytes > MAX_INVENTORY_BYTES {
        return Err(InventoryError::TooLarge {
            file,
            bytes,
            max: MAX_INVENTORY_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    Ok(check(&file, &text))
}

impl Checked {
    /// Whether the inventory has no error (infos allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.has_errors()
    }

    /// The inventory with its core service and peers resolved, if it has no error.
    pub fn valid(&self) -> Result<ValidInventory, InventoryError> {
        let invalid = || InventoryError::Invalid {
            file: self.inventory.file.clone(),
            errors: self.diagnostics.error_count().max(1),
        };
        if !self.is_valid() {
            return Err(invalid());
        }
        let inv = &self.inventory;
        let [core] = inv.host_names(CORE_GROUP)[..] else {
            return Err(invalid());
        };
        let core_vars = inv.effective_vars(core);
        let core = Member::new(inv, core, core_vars.text(var::RAFT_NODE_ADDR))?;
        let peers = inv
            .host_names(PEERS_GROUP)
            .into_iter()
            .map(|p| {
                let own = inv.listed_in(PEERS_GROUP).find_map(|h| {
                    (h.name == p)
                        .then(|| h.vars.text(var::RAFT_NODE_ADDR))
                        .flatten()
                });
                Member::new(inv, p, own)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValidInventory {
            inventory: inv.clone(),
            core,
            peers,
        })
    }
}

/// A host that runs (or will run) a core service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its FQDN.
    pub host: String,
    /// The 1-based line of its listing.
    pub line: usize,
    /// `raft_node_addr`, or `<fqdn>:7209`.
    pub raft_addr: RaftAddr,
    /// Its connection and installer settings.
    pub settings: HostSettings,
}

impl Member {
    fn new(inv: &Inventory, host: &str, addr: Option<&str>) -> Result<Self, InventoryError> {
        let raft_addr = match addr {
            Some(text) => RaftAddr::parse(text)?,
            None => RaftAddr::default_for(crate::parse_fqdn(host)?),
        };
        let line = inv
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map_or(0, |h| h.line);
        Ok(Self {
            host: host.to_string(),
            line,
            raft_addr,
            settings: inv.settings(host),
        })
    }
}

/// An inventory that passed validation: exactly one core host, an odd total, FQDNs and
/// addresses checked. Only [`Checked::valid`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidInventory {
    inventory: Inventory,
    core: Member,
    peers: Vec<Member>,
}

impl ValidInventory {
    /// The full model, other groups included.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The `kuma_core` host: the first core service.
    pub fn core(&self) -> &Member {
        &self.core
    }

    /// The `kuma_core_peers` hosts in file order.
    pub fn peers(&self) -> &[Member] {
        &self.peers
    }

    /// How many core services the cluster will have (always odd).
    pub fn core_services(&self) -> usize {
        1 + self.peers.len()
    }
}
