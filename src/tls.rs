//! TLS to both servers, with rustls (no OpenSSL needed to build): Redis certificates from
//! files, and PostgreSQL's `sslmode` as libpq users write it.
//!
//! The `postgres` crate knows only disable, prefer and require, and refuses `verify-ca` and
//! `verify-full` in a URL. So the `ssl*` parameters are taken out of `DATABASE_URL` here,
//! the crate is told only whether TLS is required, and the certificate checks that the mode
//! asks for are made by the rustls configuration built here.

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
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ))
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

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a connection string, a
/// `postgres://` URL or libpq's `key=value` form, returning the string without them and what
/// they said. A URL with more than one `@` before its host is refused: where its password
/// ends is a guess (the message shows no part of it).
pub fn split_conninfo(s: &str) -> std::result::Result<(String, PgTls), String> {
    let Some(rest) = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
    else {
        return split_keyvalue(s);
    };
    let before_query = rest.split('?').next().unwrap_or_default();
    if before_query.matches('@').count() > 1 {
        return Err(
            "has more than one `@` before its host, so where its password ends is unclear: \
             write a `@` in the password as `%40` (and any `:`, `/`, `?` or `#` in it \
             percent-encoded too)"
                .into(),
        );
    }
    split_url(s)
}

/// libpq's `key=value` connection string, split into its pairs: values may be quoted
/// (`'…'`, with `\'` and `\\` inside) and have spaces around `=`.
fn keyvalue_pairs(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("`{key}` is not followed by `=`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// As [`split_url`], for libpq's `key=value` form.
fn split_keyvalue(s: &str) -> std::result::Result<(String, PgTls), String> {
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for (key, value) in keyvalue_pairs(s)? {
        match key.as_str() {
            "sslmode" => tls.mode = Some(value.parse()?),
            "sslrootcert" => tls.rootcert = Some(PathBuf::from(value)),
            "sslcert" => tls.cert = Some(PathBuf::from(value)),
            "sslkey" => tls.key = Some(PathBuf::from(value)),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), tls))
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a `postgres://` URL's query,
/// returning the URL without them and what they said.
fn split_url(url: &str) -> std::result::Result<(String, PgTls), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), PgTls::default()));
    };
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || percent_decode(v);
        match k {
            "sslmode" => tls.mode = Some(value()?.parse()?),
            "sslrootcert" => tls.rootcert = Some(PathBuf::from(value()?)),
            "sslcert" => tls.cert = Some(PathBuf::from(value()?)),
            "sslkey" => tls.key = Some(PathBuf::from(value()?)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        "a `%` in a URL parameter is not followed by two hex digits".to_owned()
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "a URL parameter is not UTF-8".to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_come_out_of_the_url_and_the_rest_stays() {
        let (url, tls) = split_url(
            "postgres://u:p@db:5432/app?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert, Some(PathBuf::from("/etc/ca.pem")));
        let (url, tls) = split_url("postgres://db/app?sslmode=require").unwrap();
        assert_eq!(url, "postgres://db/app");
        assert_eq!(tls.mode, Some(SslMode::Require));
        assert!(split_url("postgres://db/app?sslmode=verify").is_err());
        assert_eq!(
            split_url("postgres://db/app").unwrap().0,
            "postgres://db/app"
        );
    }

    #[test]
    fn libpq_keyvalue_strings_give_up_their_ssl_settings() {
        let (rest, tls) = split_conninfo(
            "host=db port=5432 sslmode = 'verify-full' password='it\\'s' \
             sslrootcert=/etc/ca\\ 1.pem dbname=app",
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5432' password='it\\'s' dbname='app'");
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert, Some(PathBuf::from("/etc/ca 1.pem")));
        assert!(split_conninfo("host=db sslmode=sure").is_err());
        assert!(split_conninfo("host='db").is_err());
    }

    #[test]
    fn a_url_with_two_at_signs_before_its_host_is_refused_without_its_password() {
        let err = split_conninfo("postgres://u:Xq7@Zk9@db/app").unwrap_err();
        assert!(
            err.contains("`%40`") && !err.contains("Xq7") && !err.contains("Zk9"),
            "{err}"
        );
        assert!(split_conninfo("postgres://u:pa%40ss@db/app").is_ok());
        assert!(split_conninfo("postgresql://u@/app?host=/run/postgresql").is_ok());
    }
}
