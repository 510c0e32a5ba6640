//! The HTTP client pushes and pings share: ureq over rustls with the system's CAs, a few
//! seconds a request at most, no redirects, no proxy from the environment; and an endpoint's
//! URL, which may hold a token, shown as its scheme and host only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::config::UsageError;

/// The most one request may take, from connecting to the last byte of its answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Where pushes or pings go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL without its user and password, and without a `/` at the end of its path.
    url: String,
    /// `Authorization: Basic …` from the URL's user and password, if it had them.
    auth: Option<String>,
    /// `https://host:port/…`: what messages show.
    pub shown: String,
}

impl Endpoint {
    /// The endpoint `url` names, from the setting `var`. A URL that is not `http(s)://host…`
    /// is a setting to fix; the message names the variable, never the URL (it may hold a
    /// token).
    pub fn parse(var: &str, url: &str) -> Result<Endpoint> {
        let bad = |why: &str| -> anyhow::Error {
            UsageError(format!(
                "`{var}` is not a URL this can send to ({why}); it is not shown, as it may hold \
                 a token: give http(s)://host[:port]/path"
            ))
            .into()
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("it does not parse"))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme is not http or https"));
        }
        let authority = uri.authority().ok_or_else(|| bad("it names no host"))?;
        let host_port = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, hp)| hp);
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("it names no host"));
        }
        let auth = authority.as_str().rsplit_once('@').map(|(userinfo, _)| {
            let decoded = percent_encoding::percent_decode_str(userinfo).decode_utf8_lossy();
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes())
            )
        });
        let rest = uri.path_and_query().map_or("", |p| p.as_str());
        Ok(Endpoint {
            url: format!("{scheme}://{host_port}{rest}")
                .trim_end_matches('/')
                .to_owned(),
            auth,
            shown: format!("{scheme}://{host_port}/…"),
        })
    }

    /// The URL with `path` appended to its path (before its query, if it has one).
    pub fn join(&self, path: &str) -> String {
        match self.url.split_once('?') {
            Some((base, query)) => format!("{}{path}?{query}", base.trim_end_matches('/')),
            None => format!("{}{path}", self.url),
        }
    }
}

/// The client: rustls (the process's one crypto provider) with the system's CAs.
pub fn agent() -> ureq::Agent {
    crate::tls::provider();
    let roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("redis-flusher/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .into()
}

/// Sends `body` to `url` of `endpoint` with `method`; the error says what went wrong without
/// the URL (the caller shows the endpoint's `shown`).
pub fn send(
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    method: &str,
    url: &str,
    content_type: &str,
    body: &str,
) -> std::result::Result<(), String> {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", content_type);
    if let Some(auth) = &endpoint.auth {
        request = request.header("Authorization", auth);
    }
    let request = request
        .body(body.to_owned())
        .map_err(|_| "the request could not be made".to_owned())?;
    let mut response = agent.run(request).map_err(|e| match e {
        // Its text may hold the URL.
        ureq::Error::BadUri(_) => "the URL is not usable".to_owned(),
        other => other.to_string(),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let said = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    Err(format!(
        "HTTP {}{}",
        status.as_u16(),
        said.lines()
            .next()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_shown_without_its_secrets() {
        let e = Endpoint::parse("X", "https://hc-ping.com/6c3b0f4e-secret-uuid").unwrap();
        assert_eq!(e.shown, "https://hc-ping.com/…");
        assert_eq!(
            e.join("/start"),
            "https://hc-ping.com/6c3b0f4e-secret-uuid/start"
        );
        let e = Endpoint::parse("X", "http://bob:s%40cret@gw:9091/").unwrap();
        assert_eq!(e.shown, "http://gw:9091/…");
        assert_eq!(e.join("/metrics/job/j"), "http://gw:9091/metrics/job/j");
        assert_eq!(e.auth.as_deref(), Some("Basic Ym9iOnNAY3JldA=="));
        let e = Endpoint::parse("X", "https://hc.example/ping/key/slug?create=1").unwrap();
        assert_eq!(e.join("/0"), "https://hc.example/ping/key/slug/0?create=1");
        for bad in ["ftp://x/y", "hc-ping.com/uuid", "https://", "not a url"] {
            let err = Endpoint::parse("REDIS_FLUSHER_PING_URL", bad).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }
}
