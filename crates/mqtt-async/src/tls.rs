//! TLS with rustls, over any runtime's transport.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[cfg(feature = "broker")]
use futures_rustls::TlsAcceptor;
use futures_rustls::TlsConnector;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
#[cfg(feature = "broker")]
use futures_rustls::rustls::server::WebPkiClientVerifier;
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::Error;
use crate::runtime::BoxTransport;

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Roots {
    /// The operating system's store.
    System,
    /// The certificates in this PEM file.
    CaFile(PathBuf),
    /// These certificates (DER).
    Certificates(Vec<CertificateDer<'static>>),
}

/// Client-side TLS settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Trusted authorities (default: the system's).
    pub roots: Roots,
    /// A client certificate chain and key (PEM files), for servers that ask for one.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// The name to verify the server's certificate against and send as SNI (default: the host
    /// connected to).
    pub server_name: Option<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            roots: Roots::System,
            client_auth: None,
            server_name: None,
        }
    }
}

impl TlsOptions {
    /// Trust the CA certificates in a PEM file instead of the system's.
    pub fn ca_file(path: impl Into<PathBuf>) -> Self {
        Self {
            roots: Roots::CaFile(path.into()),
            ..Self::default()
        }
    }

    /// Present this client certificate chain and key (PEM files).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_auth = Some((cert.into(), key.into()));
        self
    }

    /// Verify the server against (and send as SNI) this name.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Builds the rustls configuration: loads the roots (the system's store, or a file) and
    /// the client certificate. Blocks on file I/O, so [`ClientTlsConfig`] runs it off the async
    /// tasks, once.
    fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
            }
            Roots::CaFile(path) => {
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(tls_error)?;
                }
            }
            Roots::Certificates(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(tls_error)?;
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(roots);
        let config = match &self.client_auth {
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name to check the server's certificate against when connecting to `host`.
    pub(crate) fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, Error> {
        let name = self.server_name.as_deref().unwrap_or(host).to_owned();
        ServerName::try_from(name).map_err(|e| Error::Tls(e.to_string()))
    }
}

/// The rustls configuration of one [`ClientOptions`](crate::ClientOptions)' [`TlsOptions`],
/// built on first use and then shared by every connection and reconnection of those options
/// (and of their clones: [`ClientOptions::tls`](crate::ClientOptions::tls) starts a new one).
///
/// Building it reads files (the system's certificate store can take tens of milliseconds), so
/// it runs on a short-lived thread of its own rather than on an async task: [`Runtime`] has
/// no `spawn_blocking`, and one thread per set of options is cheaper than adding one to every
/// runtime. `Client::connect` builds it before it spawns the connection's task, so a bad CA
/// file is its error and every reconnect finds the configuration ready.
///
/// [`Runtime`]: crate::Runtime
#[derive(Clone, Default)]
pub(crate) struct ClientTlsConfig(Arc<OnceLock<Arc<ClientConfig>>>);

impl std::fmt::Debug for ClientTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.get().is_some() {
            "built"
        } else {
            "not built yet"
        };
        f.debug_tuple("ClientTlsConfig").field(&state).finish()
    }
}

impl ClientTlsConfig {
    /// The connector for `tls`, built the first time.
    pub(crate) async fn connector(&self, tls: &TlsOptions) -> Result<TlsConnector, Error> {
        if let Some(config) = self.0.get() {
            return Ok(TlsConnector::from(config.clone()));
        }
        let (done, built) = async_channel::bounded(1);
        let tls = tls.clone();
        std::thread::Builder::new()
            .name("mqtt-tls-config".into())
            .spawn(move || {
                let _ = done.send_blocking(tls.client_config());
            })?;
        let config = built
            .recv()
            .await
            .map_err(|_| Error::Tls("building the TLS configuration failed".into()))??;
        // Two clients built it at once: both use the first one kept.
        Ok(TlsConnector::from(self.0.get_or_init(|| config).clone()))
    }

    /// The configuration, if built (for tests).
    #[cfg(test)]
    pub(crate) fn get(&self) -> Option<&Arc<ClientConfig>> {
        self.0.get()
    }
}

/// Runs the TLS handshake over `transport`.
pub(crate) async fn handshake(
    connector: &TlsConnector,
    name: ServerName<'static>,
    transport: BoxTransport,
) -> Result<BoxTransport, Error> {
    let stream = connector
        .connect(name, transport)
        .await
        .map_err(handshake_error)?;
    Ok(Box::new(stream))
}

/// Server-side TLS: a certificate chain and its key, and optionally client certificates.
///
/// ```
/// use mqtt_async::ServerTls;
/// // Devices must present a certificate signed by `devices-ca.pem`; its CN is the user name.
/// let tls = ServerTls::new("server.pem", "server.key")
///     .client_ca("devices-ca.pem")
///     .require_certificate(true)
///     .use_identity_as_username(true);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[cfg(feature = "broker")]
pub struct ServerTls {
    /// The certificate chain (PEM file).
    pub cert: PathBuf,
    /// The private key (PEM file).
    pub key: PathBuf,
    /// The certificate authorities that sign client certificates (PEM file). With it, a
    /// client's certificate, if it sends one, must verify against them (mosquitto's `cafile` on
    /// a listener with `require_certificate`).
    pub client_ca: Option<PathBuf>,
    /// Every client must present a certificate that verifies against
    /// [`client_ca`](Self::client_ca); a client without one fails the handshake.
    pub require_certificate: bool,
    /// The name in a client's certificate (its subject's Common Name, or else its first
    /// subject alternative name: a DNS name, an e-mail address or a URI) is its user name,
    /// whatever its CONNECT says, for the authorizer (ACLs) and in events; the certificate
    /// authenticates it, so the authenticator (a password file) is not asked. Needs
    /// [`require_certificate`](Self::require_certificate). A certificate with no such name
    /// fails the handshake.
    pub use_identity_as_username: bool,
}

#[cfg(feature = "broker")]
impl ServerTls {
    /// A certificate chain and key, both PEM files; no client certificates asked for.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            require_certificate: false,
            use_identity_as_username: false,
        }
    }

    /// Verify client certificates against the CA certificates in this PEM file.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    /// Require a client certificate (see [`ServerTls::require_certificate`](Self#structfield.require_certificate)).
    pub fn require_certificate(mut self, require: bool) -> Self {
        self.require_certificate = require;
        self
    }

    /// Use the certificate's name as the user name (see
    /// [`ServerTls::use_identity_as_username`](Self#structfield.use_identity_as_username)).
    pub fn use_identity_as_username(mut self, yes: bool) -> Self {
        self.use_identity_as_username = yes;
        self
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        if self.use_identity_as_username && !self.require_certificate {
            return Err(Error::Tls(
                "use_identity_as_username needs require_certificate".into(),
            ));
        }
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(tls_error)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.require_certificate {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(verifier.build().map_err(tls_error)?)
            }
            None if self.require_certificate => {
                return Err(Error::Tls(
                    "require_certificate needs client_ca: the CA that signs client certificates"
                        .into(),
                ));
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(read_certs(&self.cert)?, read_key(&self.key)?)
            .map_err(tls_error)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The name a client certificate (DER) stands for: its subject's Common Name, or else its
/// first subject alternative name that is a DNS name, an e-mail address or a URI.
#[cfg(feature = "broker")]
pub(crate) fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
            Some((*s).to_owned())
        }
        _ => None,
    })
}

/// A handshake the peer's certificate or protocol made fail is a TLS error (retrying will not
/// help); the network failing under it stays an I/O error.
fn handshake_error(error: std::io::Error) -> Error {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls(tls.to_string()),
        None => Error::Io(error),
    }
}

fn tls_error(error: impl std::fmt::Display) -> Error {
    Error::Tls(error.to_string())
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificates", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &PathBuf) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
}
