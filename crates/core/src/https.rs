//! HTTPS for the API and the web interface (`--http.tls.cert`, `--http.tls.key`): the
//! certificate is read again when its files change (checked every few seconds) or on
//! SIGHUP, so a renewed certificate is served without a restart. Files that cannot be
//! used leave the previous certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::CoreError;

/// The HTTPS certificate and key, reloadable. Cheap to clone.
#[derive(Clone)]
pub struct HttpTls {
    inner: Arc<Inner>,
}

struct Inner {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<rustls::ServerConfig>, [u8; 32])>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CoreError> {
    std::fs::read(path).map_err(|e| CoreError::Io(format!("cannot read {}: {e}", path.display())))
}

fn load(cert: &Path, key: &Path) -> Result<(Arc<rustls::ServerConfig>, [u8; 32]), CoreError> {
    let (cert_bytes, key_bytes) = (read(cert)?, read(key)?);
    let mut hash = Sha256::new();
    hash.update((cert_bytes.len() as u64).to_le_bytes());
    hash.update(&cert_bytes);
    hash.update(&key_bytes);
    let digest = hash.finalize().into();
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CoreError::Usage(format!("--http.tls.cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(CoreError::Usage(format!(
            "--http.tls.cert {}: no certificate in it",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        CoreError::Usage(format!(
            "--http.tls.key {}: no usable private key: {e}",
            key.display()
        ))
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CoreError::Usage(format!("HTTPS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| CoreError::Usage(format!("--http.tls.cert/--http.tls.key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), digest))
}

impl HttpTls {
    /// Reads and checks the certificate and its key.
    pub fn load(cert: &Path, key: &Path) -> Result<HttpTls, CoreError> {
        let current = load(cert, key)?;
        Ok(HttpTls {
            inner: Arc::new(Inner {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                current: RwLock::new(current),
            }),
        })
    }

    /// Reads the files again; `Ok(true)` when they changed and are served now.
    pub fn reload(&self) -> Result<bool, CoreError> {
        let (config, digest) = load(&self.inner.cert, &self.inner.key)?;
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.1 == digest {
            return Ok(false);
        }
        *current = (config, digest);
        Ok(true)
    }

    /// [`HttpTls::reload`], its outcome logged.
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(true) => {
                tracing::info!(why, cert = %self.inner.cert.display(), "HTTPS certificate reloaded")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(why, error = %e,
                "HTTPS certificate not reloaded; the previous one stays in use"),
        }
    }

    /// Checks the files every `interval` until the last clone is dropped.
    pub fn watch(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                HttpTls { inner }.reload_and_log("changed on disk");
            }
        });
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        );
        tokio_rustls::TlsAcceptor::from(config)
    }
}
