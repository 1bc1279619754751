//! Mutual TLS between core services.
//!
//! Every service holds a certificate issued by the cluster's CA. The certificate names
//! the service id as a URI subject alternative name (`urn:sqlraft:service:<id>`) and the
//! host other services reach it at (its FQDN or IP address, as a DNS or IP name). Both
//! ends of a connection verify the other against the CA; the server side also learns
//! which service is calling, and the node accepts raft messages, joins and snapshots
//! only from the member that certificate names.
//!
//! The files are read again when they change (checked every few seconds) or when
//! [`PeerTls::reload`] is called (on SIGHUP in `sqlraft-core`): new connections use the
//! new certificates, and connections made with the old ones are closed, so a CA that
//! was replaced stops being trusted at once. Files that cannot be used (half written,
//! a key that does not match) leave the previous certificates in place.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How a certificate names the service it was issued to: this prefix, then the id.
pub const SERVICE_URI_PREFIX: &str = "urn:sqlraft:service:";

/// The URI subject alternative name of a service's certificate.
pub fn service_uri(service_id: &str) -> String {
    format!("{SERVICE_URI_PREFIX}{service_id}")
}

/// Where a service's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate (PEM; several certificates are all trusted, which
    /// lets a CA be replaced without a moment where the old and new do not meet).
    pub ca: PathBuf,
    /// This service's certificate (PEM), optionally followed by intermediates.
    pub cert: PathBuf,
    /// This service's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Errors of the TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds nothing usable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificates and key do not make a working configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// This service's TLS material, reloadable. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct PeerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// Bumped on every change of the material: connections made before it end.
    generation: Arc<AtomicU64>,
    /// The host every certificate must be valid for ([`PeerTls::pin_host`]).
    host: RwLock<Option<String>>,
}

struct Loaded {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    service_id: String,
    /// The DNS names and IP addresses this service's certificate is valid for.
    hosts: Vec<String>,
    not_after_unix: i64,
    /// SHA-256 of the three files' bytes, to notice a change.
    digest: [u8; 32],
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", &self.inner.files)
            .field("service_id", &self.service_id())
            .finish()
    }
}

impl PeerTls {
    /// Reads and checks the files: the certificate must name a service id and be
    /// signed by one of the CA certificates, and the key must be the certificate's.
    pub fn load(files: TlsFiles) -> Result<PeerTls, TlsError> {
        let loaded = load(&files)?;
        Ok(PeerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(loaded)),
                generation: Arc::new(AtomicU64::new(0)),
                host: RwLock::new(None),
            }),
        })
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// The service id this service's certificate names.
    pub fn service_id(&self) -> String {
        self.current().service_id.clone()
    }

    /// True when this service's certificate is valid for `host` (a DNS name, `*.`
    /// wildcards included, or an IP address): peers reaching it at `host` accept it.
    pub fn names_host(&self, host: &str) -> bool {
        names_host(&self.current().hosts, host)
    }

    /// When this service's certificate expires (seconds since the Unix epoch).
    pub fn not_after_unix(&self) -> i64 {
        self.current().not_after_unix
    }

    /// Reads the files again. `Ok(true)`: they changed and are in use now (connections
    /// made with the previous material are being closed); `Ok(false)`: unchanged.
    /// `Err`: the new files are unusable and the previous material stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let digest = digest_files(&self.inner.files)?;
        if digest == self.current().digest {
            return Ok(false);
        }
        let loaded = load(&self.inner.files)?;
        // A service keeps its identity and the host its peers reach it at: a new
        // certificate for another id, or one not valid for that host, would cut it off
        // (found by a review: such files were taken on SIGHUP).
        let current = self.current();
        let invalid = |reason: String| TlsError::Invalid {
            path: self.inner.files.cert.clone(),
            reason,
        };
        if loaded.service_id != current.service_id {
            return Err(invalid(format!(
                "the new certificate is service {}'s, this service is {}",
                loaded.service_id, current.service_id
            )));
        }
        let pinned = self
            .inner
            .host
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(host) = pinned
            && !names_host(&loaded.hosts, &host)
        {
            return Err(invalid(format!(
                "the new certificate is not valid for {host}, where the other services reach this one"
            )));
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Requires every later certificate to be valid for `host` (where the other
    /// services reach this one); a reload that is not is refused.
    pub fn pin_host(&self, host: &str) {
        *self
            .inner
            .host
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(host.to_string());
    }

    /// Checks the files every `interval` and reloads them when they change, until the
    /// last clone of this `PeerTls` is dropped. Must be called inside a tokio runtime.
    pub fn watch(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                PeerTls { inner }.reload_and_log("changed on disk");
            }
        });
    }

    /// [`PeerTls::reload`], with its outcome logged. `why` says what prompted it.
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(true) => tracing::info!(
                why,
                service_id = %self.service_id(),
                not_after_unix = self.not_after_unix(),
                "peer TLS certificates reloaded; connections made with the previous ones are closed"
            ),
            Ok(false) => tracing::debug!(why, "peer TLS certificates unchanged"),
            Err(e) => tracing::error!(why, error = %e,
                "peer TLS certificates not reloaded; the previous ones stay in use"),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.current().server))
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.current().client))
    }

    /// A connection that ends once the material changes.
    pub(crate) fn bind<T>(&self, io: T) -> Rotating<T> {
        let generation = Arc::clone(&self.inner.generation);
        Rotating {
            since: generation.load(Ordering::SeqCst),
            generation,
            io,
        }
    }
}

/// The service id a peer's certificate names, if it names exactly one.
pub fn service_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(SERVICE_URI_PREFIX),
            _ => None,
        });
    let id = ids.next()?;
    if ids.next().is_some() || id.is_empty() {
        return None;
    }
    Some(id.to_string())
}

/// True when `hosts` (a certificate's DNS names and IP addresses) cover `host`.
fn names_host(hosts: &[String], host: &str) -> bool {
    let host = unbracketed(host);
    let ip = host.parse::<std::net::IpAddr>().ok();
    hosts
        .iter()
        .any(|name| match (ip, name.parse::<std::net::IpAddr>()) {
            (Some(ip), Ok(named)) => ip == named,
            (Some(_), Err(_)) | (None, Ok(_)) => false,
            (None, Err(_)) => match name.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent)),
                None => name.eq_ignore_ascii_case(host),
            },
        })
}

fn hosts_and_expiry(cert: &CertificateDer<'_>) -> (Vec<String>, i64) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return (Vec::new(), 0);
    };
    let hosts = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(*bytes)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (hosts, parsed.validity().not_after.timestamp())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn digest_files(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut hash = Sha256::new();
    for path in [&files.ca, &files.cert, &files.key] {
        let bytes = read(path)?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().into())
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no certificate in it".into()));
    }
    Ok(certs)
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let digest = digest_files(files)?;
    let ca = certificates(&files.ca, &read(&files.ca)?)?;
    let chain = certificates(&files.cert, &read(&files.cert)?)?;
    let key_bytes = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Invalid {
        path: files.key.clone(),
        reason: format!("no usable private key in it: {e}"),
    })?;
    let service_id = service_id_of(&chain[0]).ok_or_else(|| TlsError::Invalid {
        path: files.cert.clone(),
        reason: format!(
            "the certificate names no service (a URI name {SERVICE_URI_PREFIX}<service id>); \
             issue it with `sqlraft-core certs issue`"
        ),
    })?;
    let (hosts, not_after_unix) = hosts_and_expiry(&chain[0]);

    let mut roots = rustls::RootCertStore::empty();
    for cert in &ca {
        roots.add(cert.clone()).map_err(|e| TlsError::Invalid {
            path: files.ca.clone(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = |e: rustls::Error| TlsError::Config(e.to_string());

    // Our own certificate must pass the check our peers make.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::clone(&roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_client_cert_verifier(Arc::clone(&verifier))
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .map_err(|e| TlsError::Invalid {
            path: files.cert.clone(),
            reason: format!(
                "the certificate does not verify against {}: {e}",
                files.ca.display()
            ),
        })?;

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        service_id,
        hosts,
        not_after_unix,
        digest,
    })
}

/// `host` without the brackets of an IPv6 literal.
fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Opens a TLS connection to `host:port` (TCP with Nagle off, then the handshake,
/// verifying that the peer's certificate names `host`).
pub(crate) async fn connect(
    tls: &PeerTls,
    host: &str,
    port: u16,
) -> io::Result<Rotating<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let bare = unbracketed(host);
    let name = ServerName::try_from(bare)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?
        .to_owned();
    let tcp = tokio::net::TcpStream::connect((bare, port)).await?;
    tcp.set_nodelay(true)?;
    let connector = tls.connector();
    let stream = connector.connect(name, tcp).await.map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("error trying to connect: TLS handshake with {host}:{port} failed: {e}"),
        )
    })?;
    Ok(tls.bind(stream))
}

/// Opens the channels to peers: TLS over TCP, with the current material.
#[derive(Clone)]
pub(crate) struct Connector(pub(crate) PeerTls);

impl tower_service::Service<tonic::codegen::http::Uri> for Connector {
    type Response =
        hyper_util::rt::TokioIo<Rotating<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
            connect(&tls, &host, port)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

/// A connection that fails once the TLS material it was made with is replaced.
pub(crate) struct Rotating<T> {
    io: T,
    since: u64,
    generation: Arc<AtomicU64>,
}

impl<T> Rotating<T> {
    fn rotated(&self) -> bool {
        self.generation.load(Ordering::Relaxed) != self.since
    }
}

fn rotated_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "TLS certificates were replaced; reconnect with the new ones",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Rotating<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.rotated() {
            return Poll::Ready(Err(rotated_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rotating<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.rotated() {
            return Poll::Ready(Err(rotated_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.rotated() {
            return Poll::Ready(Err(rotated_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T> tonic::transport::server::Connected for Rotating<T>
where
    T: tonic::transport::server::Connected,
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
