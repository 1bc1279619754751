//! Ansible-style inventories for sqlraft: read them with line numbers, validate them
//! against the rules of a Raft cluster of core services, and turn a valid one into an
//! install plan.
//!
//! An inventory (`distributed.inventory.yml` or `expand.inventory.yml`) names:
//! - `kuma_core`: exactly one host, which gets the first core service
//!   (`00000000-0000-0000-0000-000000000000`, `core-1`); optional `raft_node_addr`
//!   `<fqdn>:<port>`, default `<fqdn>:7209`;
//! - `kuma_core_peers`: an even number of hosts, so the total of core services is odd.
//!   The installer only prepares them; services are created in the web interface and
//!   installed one at a time.
//!
//! Groups may sit under `all.children` or under another top-level block's `children`;
//! variables apply with precedence host > nested group > parent group > `all.vars`.
//! Other groups (`kuma_collector`, `kuma_storage`, ...) are kept and reported as
//! information. [`check`] reports every problem at once, each with file and line.
//!
//! ```
//! use sqlraft_inventory::{check, InstallPlan, Mode};
//!
//! let text = "\
//! all:
//!   vars:
//!     ansible_connection: ssh
//!     ansible_user: admin
//!   children:
//!     kuma_core:
//!       hosts:
//!         core.example.com:
//!           raft_node_addr: core.example.com:7209
//!     kuma_core_peers:
//!       hosts:
//!         peer1.example.com:
//!         peer2.example.com:
//! ";
//! let checked = check("distributed.inventory.yml", text);
//! assert!(checked.is_valid(), "{}", checked.diagnostics);
//! let inventory = checked.valid().unwrap();
//! assert_eq!(inventory.core_services(), 3);
//!
//! let plan = InstallPlan::new(&inventory, Mode::Distributed);
//! assert!(plan.to_string().contains("core.example.com (ssh as admin): install the first core service"));
//!
//! // An even total is an error that says how to fix it, with the line of the group.
//! let bad = check("distributed.inventory.yml", "all:\n  children:\n    kuma_core:\n      hosts:\n        core.example.com:\n    kuma_core_peers:\n      hosts:\n        peer1.example.com:\n");
//! assert_eq!(
//!     bad.diagnostics.all()[0].to_string(),
//!     "distributed.inventory.yml:6: error: 1 host in `kuma_core_peers` makes 2 core services; \
//!      add one peer or remove one so the total is odd"
//! );
//! ```
#![deny(missing_docs)]

mod addr;
mod check;
mod diagnostic;
mod error;
mod fqdn;
mod load;
mod model;
mod plan;
mod validate;
mod vars;
mod yaml;

pub use addr::{DEFAULT_HTTP_PORT, DEFAULT_RAFT_PORT, RaftAddr};
pub use check::{Checked, MAX_INVENTORY_BYTES, Member, ValidInventory, check, check_file};
pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use error::InventoryError;
pub use fqdn::{MAX_FQDN_LEN, MAX_LABEL_LEN, parse_fqdn};
pub use model::{
    ALL_GROUP, CORE_GROUP, Connection, Group, HostEntry, HostSettings, Inventory, PEERS_GROUP,
};
pub use plan::{
    DEFAULT_ROOT, FIRST_SERVICE_ID, FIRST_SERVICE_NAME, HostAction, HostStep, InstallPlan, Mode,
    OperatorStep,
};
pub use vars::{Value, Var, Vars, parse_bool};
