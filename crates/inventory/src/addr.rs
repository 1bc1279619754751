//! Raft addresses: `<fqdn>:<port>`, the address other core services reach a node at.

use std::fmt;

use crate::{InventoryError, parse_fqdn};

/// The Raft port used when an inventory does not set `raft_node_addr`.
pub const DEFAULT_RAFT_PORT: u16 = 7209;
/// The port of the web interface and REST API of a core service.
pub const DEFAULT_HTTP_PORT: u16 = 7220;

/// A validated `<fqdn>:<port>` Raft address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftAddr {
    host: String,
    port: u16,
}

impl RaftAddr {
    /// Parses `<fqdn>:<port>`; the port must be a number in 1-65535.
    ///
    /// ```
    /// use sqlraft_inventory::RaftAddr;
    /// let addr = RaftAddr::parse("core.example.com:7209").unwrap();
    /// assert_eq!((addr.host(), addr.port()), ("core.example.com", 7209));
    /// assert!(RaftAddr::parse("core.example.com").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, InventoryError> {
        let addr = || text.to_string();
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(InventoryError::AddrNoPort { addr: addr() });
        };
        if port.is_empty() {
            return Err(InventoryError::AddrNoPort {
                addr: host.to_string(),
            });
        }
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InventoryError::AddrPortNotNumeric {
                addr: addr(),
                port: port.to_string(),
            });
        }
        // All digits: only overflow or zero can fail, and both are "out of range".
        let port_num = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(InventoryError::AddrPortRange {
                    addr: addr(),
                    port: port.to_string(),
                });
            }
        };
        parse_fqdn(host).map_err(|e| InventoryError::AddrHost {
            addr: addr(),
            source: Box::new(e),
        })?;
        Ok(Self {
            host: host.to_string(),
            port: port_num,
        })
    }

    /// The default address of a host: `<fqdn>:7209`. The caller has checked the FQDN.
    pub fn default_for(host: &str) -> Self {
        Self {
            host: host.to_string(),
            port: DEFAULT_RAFT_PORT,
        }
    }

    /// The FQDN part.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port part.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for RaftAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fqdn_and_port() {
        let a = RaftAddr::parse("core.example.com:7209").unwrap();
        assert_eq!(a.host(), "core.example.com");
        assert_eq!(a.port(), 7209);
        assert_eq!(a.to_string(), "core.example.com:7209");
        assert_eq!(RaftAddr::parse("a.b:1").unwrap().port(), 1);
        assert_eq!(RaftAddr::parse("a.b:65535").unwrap().port(), 65535);
    }

    #[test]
    fn refuses_missing_port() {
        assert!(matches!(
            RaftAddr::parse("core.example.com"),
            Err(InventoryError::AddrNoPort { .. })
        ));
        assert!(matches!(
            RaftAddr::parse("core.example.com:"),
            Err(InventoryError::AddrNoPort { .. })
        ));
        assert!(matches!(
            RaftAddr::parse(""),
            Err(InventoryError::AddrNoPort { .. })
        ));
    }

    #[test]
    fn refuses_bad_ports() {
        for (text, numeric) in [
            ("a.b:0", true),
            ("a.b:65536", true),
            ("a.b:99999999999999999999", true),
            ("a.b:72o9", false),
            ("a.b:-1", false),
            ("a.b: 7209", false),
            ("a.b:+80", false),
        ] {
            let err = RaftAddr::parse(text).unwrap_err();
            if numeric {
                assert!(
                    matches!(err, InventoryError::AddrPortRange { .. }),
                    "{text}: {err}"
                );
            } else {
                assert!(
                    matches!(err, InventoryError::AddrPortNotNumeric { .. }),
                    "{text}: {err}"
                );
            }
        }
    }

    #[test]
    fn refuses_non_fqdn_hosts() {
        assert!(matches!(
            RaftAddr::parse("core:7209"),
            Err(InventoryError::AddrHost { .. })
        ));
        assert!(matches!(
            RaftAddr::parse("10.0.0.1:7209"),
            Err(InventoryError::AddrHost { .. })
        ));
        assert!(matches!(
            RaftAddr::parse("[::1]:7209"),
            Err(InventoryError::AddrHost { .. })
        ));
        assert!(matches!(
            RaftAddr::parse(":7209"),
            Err(InventoryError::AddrHost { .. })
        ));
    }

    #[test]
    fn messages_spell_out_the_fix() {
        let e = RaftAddr::parse("core.example.com").unwrap_err().to_string();
        assert_eq!(
            e,
            "`core.example.com` has no port; write it as <fqdn>:<port>, e.g. core.example.com:7209"
        );
        let e = RaftAddr::parse("core.example.com:70000")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`core.example.com:70000`: port 70000 is out of range 1-65535"
        );
    }
}
