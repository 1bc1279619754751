//! Host names: the fully qualified form every core service is addressed by.

use crate::InventoryError;

/// Longest FQDN in text form (RFC 1035, without the trailing dot).
pub const MAX_FQDN_LEN: usize = 253;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;

/// Checks that `name` is an FQDN: `<host>.<domain>` with at least two labels, each 1-63
/// characters of `[a-z0-9-]` not starting or ending with '-'; labels after the first do not
/// start with a digit (so an IPv4 address is refused); at most 253 characters in total.
///
/// ```
/// assert!(sqlraft_inventory::parse_fqdn("core-1.example.com").is_ok());
/// assert!(sqlraft_inventory::parse_fqdn("core").is_err());
/// assert!(sqlraft_inventory::parse_fqdn("10.0.0.1").is_err());
/// ```
pub fn parse_fqdn(name: &str) -> Result<&str, InventoryError> {
    if name.is_empty() {
        return Err(InventoryError::EmptyName);
    }
    let len = name.chars().count();
    if len > MAX_FQDN_LEN {
        return Err(InventoryError::NameTooLong {
            name: name.to_string(),
            len,
        });
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        check_label(name, label, i > 0)?;
    }
    if labels.len() < 2 {
        return Err(InventoryError::NotQualified {
            name: name.to_string(),
        });
    }
    Ok(name)
}

fn check_label(name: &str, label: &str, is_domain: bool) -> Result<(), InventoryError> {
    let err_fields = || (name.to_string(), label.to_string());
    if label.is_empty() || label.chars().count() > MAX_LABEL_LEN {
        let (name, label) = err_fields();
        return Err(InventoryError::LabelLength { name, label });
    }
    if let Some(ch) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let (name, label) = err_fields();
        return Err(InventoryError::LabelChar { name, label, ch });
    }
    if label.starts_with('-') || label.ends_with('-') {
        let (name, label) = err_fields();
        return Err(InventoryError::LabelHyphen { name, label });
    }
    if is_domain && label.starts_with(|c: char| c.is_ascii_digit()) {
        let (name, label) = err_fields();
        return Err(InventoryError::DomainLabelDigit { name, label });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_fqdns() {
        for ok in [
            "a.b",
            "core.example.com",
            "kuma-1.dc-2.corp",
            "1core.example.com",
            "x.y-z9",
        ] {
            assert!(parse_fqdn(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_single_label() {
        assert!(matches!(
            parse_fqdn("core"),
            Err(InventoryError::NotQualified { .. })
        ));
        assert!(matches!(parse_fqdn(""), Err(InventoryError::EmptyName)));
    }

    #[test]
    fn refuses_bad_labels() {
        assert!(matches!(
            parse_fqdn("core..example"),
            Err(InventoryError::LabelLength { .. })
        ));
        assert!(matches!(
            parse_fqdn("core.example."),
            Err(InventoryError::LabelLength { .. })
        ));
        assert!(matches!(
            parse_fqdn(".example.com"),
            Err(InventoryError::LabelLength { .. })
        ));
        let long = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(
            parse_fqdn(&long),
            Err(InventoryError::LabelLength { .. })
        ));
        let max = format!("{}.example.com", "a".repeat(63));
        assert!(parse_fqdn(&max).is_ok());
        assert!(matches!(
            parse_fqdn("Core.example.com"),
            Err(InventoryError::LabelChar { ch: 'C', .. })
        ));
        assert!(matches!(
            parse_fqdn("core_1.example.com"),
            Err(InventoryError::LabelChar { ch: '_', .. })
        ));
        assert!(matches!(
            parse_fqdn("-core.example.com"),
            Err(InventoryError::LabelHyphen { .. })
        ));
        assert!(matches!(
            parse_fqdn("core.example-.com"),
            Err(InventoryError::LabelHyphen { .. })
        ));
    }

    #[test]
    fn refuses_digit_domain_labels_and_ip_addresses() {
        assert!(matches!(
            parse_fqdn("10.0.0.1"),
            Err(InventoryError::DomainLabelDigit { .. })
        ));
        assert!(matches!(
            parse_fqdn("core.1example.com"),
            Err(InventoryError::DomainLabelDigit { .. })
        ));
    }

    #[test]
    fn enforces_total_length() {
        let label = "a".repeat(63);
        let ok = [label.as_str(); 4].join(".")[..253]
            .trim_end_matches('.')
            .to_string();
        assert!(ok.len() <= 253);
        assert!(parse_fqdn(&ok).is_ok(), "{ok}");
        let too_long = [label.as_str(); 5].join(".");
        assert!(matches!(
            parse_fqdn(&too_long),
            Err(InventoryError::NameTooLong { len: 319, .. })
        ));
    }

    #[test]
    fn non_ascii_does_not_panic() {
        assert!(parse_fqdn("ядро.example.com").is_err());
        assert!(parse_fqdn("core.exämple.com").is_err());
    }
}
