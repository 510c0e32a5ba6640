//! `serve --listen`: a small synchronous HTTP server (tiny_http, a thread of its own) for
//! /metrics, /healthz and /readyz. GET and HEAD only; anything else is 404 or 405.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tiny_http::{Header, Method, Response, Server};

use super::health::Health;
use crate::config::UsageError;
use crate::output::metrics::CONTENT_TYPE;

/// The listener; stopped when dropped.
pub struct Listener {
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `addr` (`HOST:PORT`); an address it cannot listen on is a setting to fix.
    pub fn start(addr: &str, health: Arc<Health>) -> Result<Listener> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            UsageError(format!(
                "cannot listen on {addr:?} (`--listen`, `REDIS_FLUSHER_LISTEN`): {e}; give a \
                 free HOST:PORT, e.g. 0.0.0.0:8397"
            ))
        })?;
        let local = listener
            .local_addr()
            .context("could not read the address it listens on")?;
        let server = Arc::new(
            Server::from_listener(listener, None)
                .map_err(|e| anyhow::anyhow!("could not serve HTTP on {local}: {e}"))?,
        );
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = answer(request.method(), request.url(), &health);
                    let _ = request.respond(response);
                }
            })
            .context("could not start the HTTP thread")?;
        log::info!("serving /metrics, /healthz and /readyz on http://{local}");
        Ok(Listener {
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Answer = Response<std::io::Cursor<Vec<u8>>>;

fn answer(method: &Method, url: &str, health: &Health) -> Answer {
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(method, Method::Get | Method::Head) {
        return text(
            405,
            "only GET and HEAD\n".into(),
            TEXT,
            &[("Allow", "GET, HEAD")],
        );
    }
    match url.split('?').next().unwrap_or_default() {
        "/metrics" => text(200, health.metrics(), CONTENT_TYPE, &[]),
        "/healthz" => match health.healthy() {
            Ok(why) => text(200, why + "\n", TEXT, &[]),
            Err(why) => text(503, why + "\n", TEXT, &[]),
        },
        "/readyz" if health.ready() => text(200, "ready: a run has finished\n".into(), TEXT, &[]),
        "/readyz" => text(
            503,
            "not ready: the first run has not finished\n".into(),
            TEXT,
            &[],
        ),
        _ => text(
            404,
            "not found: /metrics, /healthz, /readyz\n".into(),
            TEXT,
            &[],
        ),
    }
}

fn text(status: u16, body: String, content_type: &str, more: &[(&str, &str)]) -> Answer {
    let mut response = Response::from_string(body).with_status_code(status);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ]
    .iter()
    .chain(more)
    {
        // Our names and values are ASCII, which tiny_http always takes.
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response = response.with_header(h);
        }
    }
    response
}
