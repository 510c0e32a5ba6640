//! What watches a flusher, as itself: a private Prometheus scraping a `serve`, a private
//! Prometheus Pushgateway (the Debian packages `prometheus`, `prometheus-pushgateway`), a
//! recorder of cron-monitor pings; and GETs over HTTP.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::servers::{free_port, stop, watchdog};

/// `GET http://{addr}{path}`: the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("read the body");
    (status, body)
}

/// Polls `GET addr/path` until `until` holds for (status, body), at most `limit`.
pub fn wait_for_http(
    addr: &str,
    path: &str,
    limit: Duration,
    until: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + limit;
    loop {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        if let Ok(mut r) = agent.get(format!("http://{addr}{path}")).call() {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            if until(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "GET {addr}{path}: still {status} after {limit:?}: {body}"
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "GET {addr}{path}: no answer in {limit:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of sample `name` (its whole line up to the value, labels included) in a
/// Prometheus text page.
pub fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn program(name: &str, package: &str) -> PathBuf {
    redis_flusher::throwaway::find(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: install it (apt-get install {package})")
    })
}

/// A private process on a free loopback port, stopped when dropped.
pub struct Daemon {
    pub addr: String,
    pid: u32,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(self.pid, libc::SIGTERM, &self.dir);
    }
}

/// Spawns `cmd` (its files in `dir`), and waits for `GET /-/ready` at `addr`.
#[allow(clippy::zombie_processes)]
fn daemon(mut cmd: Command, addr: String, dir: PathBuf) -> Daemon {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    watchdog(child.id(), "TERM", &dir);
    let d = Daemon {
        addr,
        pid: child.id(),
        dir,
    };
    wait_for_http(&d.addr, "/-/ready", Duration::from_secs(30), |s, _| {
        s == 200
    });
    d
}

fn tempdir(what: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("flusher-{what}-"))
        .tempdir()
        .expect("temp dir")
        .keep()
}

/// A private Prometheus scraping `target` (`HOST:PORT`, path /metrics) every second.
pub fn start_prometheus(target: &str) -> Daemon {
    let dir = tempdir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: redis-flusher\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(program("prometheus", "prometheus"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn");
    daemon(cmd, addr, dir)
}

impl Daemon {
    /// Prometheus' answer to an instant query: the value of its one series, if it has one.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let body = agent
            .get(format!("http://{}/api/v1/query", self.addr))
            .query("query", promql)
            .call()
            .expect("query Prometheus")
            .body_mut()
            .read_to_string()
            .expect("read the answer");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let result = answer["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

/// A private Prometheus Pushgateway, keeping nothing on disk.
pub fn start_pushgateway() -> Daemon {
    let dir = tempdir("pushgateway");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(program("prometheus-pushgateway", "prometheus-pushgateway"));
    cmd.arg(format!("--web.listen-address={addr}"))
        .arg("--persistence.file=")
        .arg("--log.level=warn");
    daemon(cmd, addr, dir)
}

/// One request a [`PingRecorder`] received.
#[derive(Debug, Clone)]
pub struct Ping {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// A local HTTP server that records every request, answers 200 (or `status`), as a cron
/// monitor would.
pub struct PingRecorder {
    pub addr: String,
    pub received: Arc<Mutex<Vec<Ping>>>,
    server: Arc<tiny_http::Server>,
}

impl PingRecorder {
    pub fn start(status: u16) -> PingRecorder {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("listen"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("an IP address")
            .to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&server), Arc::clone(&received));
        std::thread::spawn(move || {
            for mut request in s.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                r.lock().unwrap().push(Ping {
                    method: request.method().to_string(),
                    path: request.url().to_owned(),
                    body,
                });
                let _ = request
                    .respond(tiny_http::Response::from_string("OK").with_status_code(status));
            }
        });
        PingRecorder {
            addr,
            received,
            server,
        }
    }

    pub fn pings(&self) -> Vec<Ping> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for PingRecorder {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
