//! TLS to both servers, with rustls (no OpenSSL needed to build): Redis certificates from
//! files, and PostgreSQL's `sslmode` as libpq users write it.
//!
//! The `postgres` crate knows only disable, prefer and require, and refuses `verify-ca` and
//! `verify-full` in a URL. So the `ssl*` parameters are taken out of `DATABASE_URL`
//! (`config/conninfo.rs`), the crate is told only whether TLS is required, and the
//! certificate checks that the mode asks for are made by the rustls configuration built here.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// The one crypto provider (ring), installed for the process so that every rustls user
/// (ours, the redis crate's) agrees on it.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("could not read {what} {}", path.display()))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(what, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("{what} {} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{what} {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The certificates for a Redis TLS connection: the CA (or the system's), and a client
/// certificate when the server asks for one.
pub fn redis_certs(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<redis::TlsCertificates> {
    provider();
    let client_tls = match (cert, key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read("client certificate", c)?,
            client_key: read("client key", k)?,
        }),
        (None, None) => None,
        _ => anyhow::bail!(
            "`REDIS_CLIENT_CERT_FILE` and `REDIS_CLIENT_KEY_FILE` go together: set both or neither"
        ),
    };
    let root_cert = ca
        .map(|p| {
            certs("CA file", p)?; // a clear error now rather than a vague one at connect
            read("CA file", p)
        })
        .transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, without checking its certificate (also libpq's `allow`).
    Prefer,
    /// TLS or nothing; the certificate is checked against `sslrootcert` only if one is given.
    Require,
    /// TLS, and a certificate signed by the CA; any host name.
    VerifyCa,
    /// TLS, a certificate signed by the CA, for the host we connect to.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // Not echoed: a value in the wrong place may be a password.
            _ => {
                return Err(
                    "sslmode is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                        .into(),
                )
            }
        })
    }
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What the `postgres` crate itself is told.
    pub fn for_crate(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        }
    }
}

/// The TLS parameters of a PostgreSQL connection.
#[derive(Debug, Clone, Default)]
pub struct PgTls {
    pub mode: Option<SslMode>,
    pub rootcert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The connector for `tls`: the certificate checks its mode asks for.
pub fn pg_connector(tls: &PgTls) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let provider = provider();
    let mode = tls.mode.unwrap_or(SslMode::Prefer);
    let roots = || -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match &tls.rootcert {
            // libpq 16's way of asking for the system's CAs.
            Some(path) if path.as_os_str() == "system" => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
            }
            Some(path) => {
                for c in certs("sslrootcert", path)? {
                    store.add(c).with_context(|| {
                        format!(
                            "sslrootcert {} is not a usable CA certificate",
                            path.display()
                        )
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    anyhow::bail!(
                        "sslmode={} needs a CA: set sslrootcert (or `DB_SSLROOTCERT`); the system \
                         has no trusted CAs to use instead",
                        mode.as_str()
                    );
                }
            }
        }
        Ok(store)
    };
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer => Arc::new(NoCheck(provider.clone())),
        SslMode::Require if tls.rootcert.is_none() => Arc::new(NoCheck(provider.clone())),
        // libpq: require with a root certificate verifies like verify-ca.
        SslMode::Require | SslMode::VerifyCa => Arc::new(CaOnly(webpki(roots()?, &provider)?)),
        SslMode::VerifyFull => webpki(roots()?, &provider)?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            let key = PrivateKeyDer::from_pem_slice(&read("sslkey", k)?)
                .with_context(|| format!("sslkey {} is not a PEM private key", k.display()))?;
            builder
                .with_client_auth_cert(certs("sslcert", c)?, key)
                .context("sslcert and sslkey do not make a usable client certificate")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("sslcert and sslkey go together: set both or neither"),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("TLS certificate verifier")
}

/// libpq's `prefer` and `require` without a root certificate: encrypted, not authenticated.
/// The handshake's signatures are still checked.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to the CA; the name in it is not checked. (webpki
/// checks the chain first, so a name error means the chain was good.)
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
