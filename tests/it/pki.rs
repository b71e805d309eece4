//! Certificates made on the fly for the TLS tests: a CA, a server certificate it signed for
//! `localhost` and 127.0.0.1, client certificates.

use std::fs;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// Certificate files in a scratch directory, removed on drop.
pub(crate) struct Pki {
    dir: TempDir,
    /// The CA, to sign client certificates.
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate (PEM): what clients trust.
    pub(crate) ca: PathBuf,
    /// The server's certificate (PEM), signed by the CA.
    pub(crate) cert: PathBuf,
    /// The server's private key (PEM, PKCS #8).
    pub(crate) key: PathBuf,
}

impl Pki {
    /// A CA and a server certificate for `localhost` and 127.0.0.1.
    pub(crate) fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mqtt-tests-tls-")
            .tempdir()
            .expect("temporary directory");
        let ca = make_ca("mqtt-rs test CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = params
            .signed_by(&server_key, &ca)
            .expect("signing the server certificate");

        let path = |name: &str| dir.path().join(name);
        fs::write(path("ca.pem"), ca.pem()).expect("write ca.pem");
        fs::write(path("server.pem"), server.pem()).expect("write server.pem");
        fs::write(path("server.key"), server_key.serialize_pem()).expect("write server.key");
        Pki {
            issuer: ca,
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            dir,
        }
    }

    /// A client certificate and key (PEM files) signed by the CA, with `cn` as its subject's
    /// Common Name (if any) and `san` as its DNS subject alternative names.
    pub(crate) fn client(&self, file: &str, cn: Option<&str>, san: &[&str]) -> (PathBuf, PathBuf) {
        client_cert(&self.dir, &self.issuer, file, cn, san)
    }

    /// A client certificate and key signed by a CA the broker does not know.
    pub(crate) fn foreign_client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        let other = make_ca("a CA nobody trusts");
        client_cert(&self.dir, &other, file, Some(cn), &[])
    }

    /// The certificate of a CA that signed nothing here, in the same directory.
    pub(crate) fn unrelated_ca(&self) -> PathBuf {
        let path = self.dir.path().join("other-ca.pem");
        fs::write(&path, make_ca("some other CA").pem()).expect("write other-ca.pem");
        path
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("self-signing the CA")
}

fn client_cert(
    dir: &TempDir,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    file: &str,
    cn: Option<&str>,
    san: &[&str],
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(san.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("client certificate parameters");
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, issuer)
        .expect("signing the client certificate");
    let cert_path = dir.path().join(format!("{file}.pem"));
    let key_path = dir.path().join(format!("{file}.key"));
    fs::write(&cert_path, cert.pem()).expect("write the client certificate");
    fs::write(&key_path, key.serialize_pem()).expect("write the client key");
    (cert_path, key_path)
}
