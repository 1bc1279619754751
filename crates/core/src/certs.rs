//! Certificates for mutual TLS between core services: a cluster CA, and one
//! certificate per service naming its service id (a URI name
//! `urn:sqlraft:service:<id>`) and the host its peers reach it at (DNS name or IP
//! address). `sqlraft-core certs init` and `certs issue` write them; the demo and the
//! test harness make them in memory.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sqlraft::TlsFiles;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::CoreError;

/// File names of the CA in its directory.
pub const CA_CERT: &str = "ca.crt";
/// See [`CA_CERT`].
pub const CA_KEY: &str = "ca.key";
/// How long a CA made by [`Ca::new`] is valid, in days.
pub const CA_DAYS: u32 = 3650;
/// How long a service certificate is valid by default, in days.
pub const SERVICE_DAYS: u32 = 825;

/// A cluster CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA's certificate (what the holder trusts).
    pub ca_pem: String,
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

fn failed(what: &str) -> impl Fn(rcgen::Error) -> CoreError + '_ {
    move |e| CoreError::Failed(format!("{what}: {e}"))
}

/// From an hour ago (a peer whose clock is a little behind still accepts it) to
/// `days` from now.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    )
}

impl Ca {
    /// A new CA, valid for `days`.
    pub fn new(days: u32) -> Result<Ca, CoreError> {
        let key = KeyPair::generate().map_err(failed("cannot make a CA key"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "sqlraft cluster CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity(days);
        let cert = params
            .self_signed(&key)
            .map_err(failed("cannot sign the CA certificate"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir` (`ca.crt`, `ca.key`), as [`Ca::write`] left it.
    pub fn read(dir: &Path) -> Result<Ca, CoreError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| CoreError::Io(format!("cannot read {}: {e}", path.display())))
        };
        let cert_pem = read(CA_CERT)?;
        let key_pem = read(CA_KEY)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            CoreError::Failed(format!(
                "{}: not a usable private key: {e}",
                dir.join(CA_KEY).display()
            ))
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            CoreError::Failed(format!(
                "{}: not a usable CA certificate for this key: {e}",
                dir.join(CA_CERT).display()
            ))
        })?;
        Ok(Ca {
            cert_pem,
            issuer,
            key_pem,
        })
    }

    /// The CA in `dir`, made there first when there is none (several callers racing
    /// end up with the same one).
    pub fn open_or_create(dir: &Path, days: u32) -> Result<Ca, CoreError> {
        if dir.join(CA_KEY).exists() {
            return Ca::read(dir);
        }
        let ca = Ca::new(days)?;
        match ca.write(dir) {
            Ok(_) => Ok(ca),
            Err(_) if dir.join(CA_KEY).exists() => {
                // Another caller won the race; its files may still be being written.
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ca::read(dir)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `ca.crt` and `ca.key` (readable by its owner only) into `dir`, creating
    /// it. An existing CA there is never overwritten.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), CoreError> {
        create_dir(dir)?;
        let cert = dir.join(CA_CERT);
        let key = dir.join(CA_KEY);
        for path in [&cert, &key] {
            if path.exists() {
                return Err(CoreError::Failed(format!(
                    "{} exists: a CA is already there (remove it first, or choose another --dir)",
                    path.display()
                )));
            }
        }
        write_new(&key, &self.key_pem, 0o600)?;
        write_new(&cert, &self.cert_pem, 0o644)?;
        Ok((cert, key))
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for service `id`, reached by its peers at `host` (an FQDN or an
    /// IP address), valid for `days`, for both ends of a connection.
    pub fn issue(&self, id: &str, host: &str, days: u32) -> Result<Issued, CoreError> {
        let (not_before, not_after) = validity(days);
        self.issue_between(id, host, not_before, not_after)
    }

    /// [`Ca::issue`] with an explicit validity period (one in the past makes an
    /// expired certificate, as tests need).
    pub fn issue_between(
        &self,
        id: &str,
        host: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Issued, CoreError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(CoreError::Usage("--fqdn must not be empty".into()));
        }
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            // Found by a review: `core-1.example.com:7209` (the raft address, port
            // included) or a URL made a certificate no node could use, and replaced
            // the working one.
            return Err(CoreError::Usage(format!(
                "--fqdn {host:?} is not a host name or an IP address (give the host alone, \
                 without a port or scheme: core-1.example.com)"
            )));
        }
        let key = KeyPair::generate().map_err(failed("cannot make a key"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, id);
        params.distinguished_name = name;
        let uri = sqlraft::tls::service_uri(id);
        params.subject_alt_names = vec![
            SanType::URI(
                uri.as_str()
                    .try_into()
                    .map_err(|e| CoreError::Usage(format!("service id {id:?}: {e}")))?,
            ),
            match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.try_into()
                        .map_err(|e| CoreError::Usage(format!("--fqdn {host:?}: {e}")))?,
                ),
            },
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(failed("cannot sign the certificate"))?;
        Ok(Issued {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where [`write_service_files`] puts service `id`'s files in `dir`: `ca.crt`,
/// `<id>.crt` and `<id>.key`.
pub fn service_files(dir: &Path, id: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join(CA_CERT),
        cert: dir.join(format!("{id}.crt")),
        key: dir.join(format!("{id}.key")),
    }
}

/// Service `id`'s files in `dir` (as [`write_service_files`] names them): kept when its
/// certificate is there already (a restart), otherwise issued for `host` from the CA in
/// `dir`, made there first when there is none. For the test harnesses.
pub fn ensure_service_files(
    dir: &Path,
    id: &str,
    host: &str,
    days: u32,
) -> Result<TlsFiles, CoreError> {
    let files = service_files(dir, id);
    if files.cert.exists() {
        return Ok(files);
    }
    let ca = Ca::open_or_create(dir, days)?;
    write_service_files(&ca, id, host, days, dir)
}

/// The `run` flags that use `files`.
pub fn run_flags(files: &TlsFiles) -> Vec<String> {
    vec![
        "--raft.tls.ca".into(),
        files.ca.display().to_string(),
        "--raft.tls.cert".into(),
        files.cert.display().to_string(),
        "--raft.tls.key".into(),
        files.key.display().to_string(),
    ]
}

/// A DNS host name: labels of 1-63 ASCII letters, digits and `-` (not first or last),
/// separated by dots, 253 characters at most; a trailing dot is not taken.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Issues a certificate for service `id` at `host` and writes `<id>.crt`, `<id>.key`
/// and a copy of the CA certificate (`ca.crt`, unless `out` is the CA's own directory)
/// into `out`. Existing files of that service are replaced (that is how a
/// certificate is renewed; running services pick the new one up).
pub fn write_service_files(
    ca: &Ca,
    id: &str,
    host: &str,
    days: u32,
    out: &Path,
) -> Result<TlsFiles, CoreError> {
    let issued = ca.issue(id, host, days)?;
    create_dir(out)?;
    let files = service_files(out, id);
    replace(&files.key, &issued.key_pem, 0o600)?;
    replace(&files.cert, &issued.cert_pem, 0o644)?;
    if std::fs::read_to_string(&files.ca).ok().as_deref() != Some(ca.cert_pem()) {
        replace(&files.ca, ca.cert_pem(), 0o644)?;
    }
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<(), CoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", dir.display())))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CoreError::Io(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CoreError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Writes `path` whole through a temporary file and a rename, so a service watching it
/// never reads half of it.
fn replace(path: &Path, text: &str, mode: u32) -> Result<(), CoreError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, text, mode)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| CoreError::Io(format!("cannot replace {}: {e}", path.display())))
}

/// `sqlraft-core certs init`: a new CA in `dir`.
pub fn init(dir: &Path, days: u32) -> Result<(), CoreError> {
    check_days(days)?;
    let (cert, key) = Ca::new(days)?.write(dir)?;
    println!("CA certificate: {}", cert.display());
    println!(
        "CA key:         {} (keep it secret: it makes members)",
        key.display()
    );
    Ok(())
}

/// `sqlraft-core certs issue`: service `id`'s certificate for `host`, from the CA in
/// `ca_dir`, written to `out`.
pub fn issue(id: &str, host: &str, ca_dir: &Path, out: &Path, days: u32) -> Result<(), CoreError> {
    check_days(days)?;
    let ca = Ca::read(ca_dir)?;
    let files = write_service_files(&ca, id, host, days, out)?;
    println!("certificate: {}", files.cert.display());
    println!("key:         {}", files.key.display());
    println!("CA:          {}", files.ca.display());
    println!("run flags:   {}", run_flags(&files).join(" "));
    Ok(())
}

fn check_days(days: u32) -> Result<(), CoreError> {
    if days == 0 || days > 36_500 {
        return Err(CoreError::Usage(
            "--days must be between 1 and 36500".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_the_service_and_load_as_peer_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(30).expect("ca");
        let (ca_cert, ca_key) = ca.write(&dir.path().join("ca")).expect("write ca");
        assert!(
            ca.write(&dir.path().join("ca")).is_err(),
            "a CA is never overwritten"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let again = Ca::read(&dir.path().join("ca")).expect("read ca");
        let id = "6f1c0a3e-1234-4abc-9def-0123456789ab";
        let files = write_service_files(
            &again,
            id,
            "core-2.example.com",
            30,
            &dir.path().join("svc"),
        )
        .expect("issue");
        assert_eq!(
            std::fs::read_to_string(&files.ca).expect("ca copy"),
            std::fs::read_to_string(&ca_cert).expect("ca")
        );
        let tls =
            sqlraft::PeerTls::load(files.clone()).expect("a certificate issued by the CA loads");
        assert_eq!(tls.service_id(), id);
        assert!(tls.names_host("core-2.example.com"));
        assert!(!tls.names_host("core-3.example.com"));

        let by_ip = ca.issue(id, "127.0.0.7", 30).expect("by ip");
        assert!(by_ip.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.issue(id, "", 30).is_err());
    }

    /// `--fqdn` is a host alone (found by a review: a port, a URL or a space made a
    /// certificate no node could load, which replaced the working one).
    #[test]
    fn a_host_with_a_port_a_scheme_or_a_space_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(30).expect("ca");
        let id = "6f1c0a3e-1234-4abc-9def-0123456789ab";
        let out = dir.path().join("svc");
        let good = write_service_files(&ca, id, "core-1.example.com", 30, &out).expect("issue");
        let before = std::fs::read(&good.cert).expect("cert");
        for bad in [
            "core-1.example.com:7209",
            "http://core-1.example.com",
            "bad host!",
            "core-1..example.com",
            "-core.example.com",
            "core_1.example.com",
        ] {
            let err = write_service_files(&ca, id, bad, 30, &out)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was taken"));
            assert!(err.to_string().contains("not a host name"), "{bad}: {err}");
        }
        assert_eq!(
            std::fs::read(&good.cert).expect("cert"),
            before,
            "left as it was"
        );
        for fine in [
            "core-1",
            "localhost",
            "127.0.0.3",
            "::1",
            "[::1]",
            "CORE-1.Example.com",
        ] {
            assert!(ca.issue(id, fine, 30).is_ok(), "{fine}");
        }
    }

    /// A reload keeps the service's identity and host: files for another service, or
    /// not valid for the pinned host, are refused and the old ones stay in use.
    #[test]
    fn a_reload_refuses_another_services_or_another_hosts_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(30).expect("ca");
        let me = "6f1c0a3e-1234-4abc-9def-0123456789ab";
        let files = write_service_files(&ca, me, "127.0.0.1", 30, dir.path()).expect("issue");
        let tls = sqlraft::PeerTls::load(files.clone()).expect("load");
        tls.pin_host("127.0.0.1");
        let replace = |issued: Issued| {
            std::fs::write(&files.cert, issued.cert_pem).expect("cert");
            std::fs::write(&files.key, issued.key_pem).expect("key");
        };
        replace(
            ca.issue("00000000-0000-0000-0000-000000000000", "127.0.0.1", 30)
                .expect("other"),
        );
        assert!(tls.reload().is_err(), "another service's certificate");
        replace(ca.issue(me, "127.0.0.2", 30).expect("other host"));
        assert!(tls.reload().is_err(), "not valid for the pinned host");
        assert_eq!(tls.service_id(), me);
        assert!(tls.names_host("127.0.0.1"));
        replace(ca.issue(me, "127.0.0.1", 30).expect("renewed"));
        assert!(tls.reload().expect("a renewal is taken"));
    }
}
