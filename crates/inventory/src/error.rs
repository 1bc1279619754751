//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// The name and address variants are also the messages of the matching diagnostics, so
/// [`parse_fqdn`](crate::parse_fqdn) and [`RaftAddr::parse`](crate::RaftAddr::parse) explain
/// a problem in the same words as `inventory check`.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The inventory file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The inventory is larger than [`MAX_INVENTORY_BYTES`](crate::MAX_INVENTORY_BYTES).
    #[error("{file}: the inventory is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// The file name.
        file: String,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A plan was asked for an inventory that has errors.
    #[error("{file}: the inventory has {errors} error(s); run `inventory check` to see them")]
    Invalid {
        /// The file name.
        file: String,
        /// How many errors validation found.
        errors: usize,
    },
    /// An empty host name.
    #[error("the host name is empty")]
    EmptyName,
    /// A host name longer than 253 characters.
    #[error("`{name}` is {len} characters long; an FQDN has at most 253")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// A name with one label only (`core` instead of `core.example.com`).
    #[error("`{name}` is not an FQDN: write it as <host>.<domain>, e.g. {name}.example.com")]
    NotQualified {
        /// The name.
        name: String,
    },
    /// An empty label or one longer than 63 characters.
    #[error("`{name}`: label `{label}` must be 1 to 63 characters long")]
    LabelLength {
        /// The name.
        name: String,
        /// The label.
        label: String,
    },
    /// A label with a character outside `[a-z0-9-]`.
    #[error("`{name}`: label `{label}` has `{ch}`; only a-z, 0-9 and '-' are allowed")]
    LabelChar {
        /// The name.
        name: String,
        /// The label.
        label: String,
        /// The first bad character.
        ch: char,
    },
    /// A label starting or ending with '-'.
    #[error("`{name}`: label `{label}` starts or ends with '-'")]
    LabelHyphen {
        /// The name.
        name: String,
        /// The label.
        label: String,
    },
    /// A domain label (not the first) starting with a digit.
    #[error("`{name}`: domain label `{label}` starts with a digit")]
    DomainLabelDigit {
        /// The name.
        name: String,
        /// The label.
        label: String,
    },
    /// An address without `:<port>`.
    #[error("`{addr}` has no port; write it as <fqdn>:<port>, e.g. {addr}:7209")]
    AddrNoPort {
        /// The address.
        addr: String,
    },
    /// A port that is not a number.
    #[error("`{addr}`: port `{port}` is not a number")]
    AddrPortNotNumeric {
        /// The address.
        addr: String,
        /// The port text.
        port: String,
    },
    /// A port outside 1-65535.
    #[error("`{addr}`: port {port} is out of range 1-65535")]
    AddrPortRange {
        /// The address.
        addr: String,
        /// The port text.
        port: String,
    },
    /// The host part of an address is not an FQDN.
    #[error("`{addr}`: {source}")]
    AddrHost {
        /// The address.
        addr: String,
        /// Why the host part is not an FQDN.
        source: Box<InventoryError>,
    },
}
