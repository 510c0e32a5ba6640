//! `serve`: runs on a schedule, its HTTP endpoints scraped by a real Prometheus, two replicas
//! as a hot standby, a stop that fits its platform; pushes to a real Pushgateway and pings to
//! a cron monitor, from `run` and `serve`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    finish_within, free_port, http_get, sample, servers, signal, start_prometheus,
    start_pushgateway, start_writers, wait_for_http, Outcome, PingRecorder, TestEnv,
};

/// `serve` on this namespace with `args`, its stderr kept.
fn spawn_serve(env: &TestEnv, args: &[&str]) -> Child {
    let mut cmd = env.cmd();
    cmd.arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start redis-flusher serve")
}

/// SIGTERM, then its outcome, within `limit`.
fn stop(child: Child, limit: Duration) -> (Outcome, Duration) {
    signal(child.id(), libc::SIGTERM);
    finish_within(child, limit)
}

/// Polls until `f` holds, at most `limit`.
fn wait_until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_flushes_every_interval_counts_it_and_stops_with_exit_0() {
    let env = TestEnv::new(100);
    let first = env.set_many(60, |i| i64::from(i % 4 + 1));
    let addr = format!("127.0.0.1:{}", free_port());
    let child = spawn_serve(&env, &["--interval", "1", "--listen", &addr]);
    wait_for_http(&addr, "/readyz", Duration::from_secs(20), |s, _| s == 200);
    wait_until(Duration::from_secs(20), "the first keys flushed", || {
        env.total() == first
    });
    // Keys set after the first run are flushed by a later one, a second later.
    let second = env.set_many(100, |_| 2);
    wait_until(Duration::from_secs(20), "the second keys flushed", || {
        env.total() == first + second
    });
    // The rows are committed before the run ends (its journals deleted, its figures
    // counted): the metrics follow once it has.
    wait_until(
        Duration::from_secs(20),
        "serve counted the second keys",
        || {
            sample(
                &http_get(&addr, "/metrics").1,
                "redis_flusher_keys_flushed_total",
            ) == Some(160.0)
        },
    );
    let (status, health) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{health}");
    let (status, page) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&page, "redis_flusher_keys_flushed_total"),
        Some(160.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "redis_flusher_hits_flushed_total"),
        Some((first + second) as f64)
    );
    let ok = sample(&page, "redis_flusher_runs_total{result=\"ok\"}").expect("ok runs");
    assert!(ok >= 2.0, "{page}");
    assert_eq!(
        sample(&page, "redis_flusher_runs_total{result=\"failed\"}"),
        Some(0.0)
    );
    assert!(sample(&page, "redis_flusher_last_success_timestamp_seconds").unwrap_or(0.0) > 1e9);
    assert_eq!(sample(&page, "redis_flusher_pending_journals"), Some(0.0));
    assert!(page.contains("# TYPE redis_flusher_run_duration_seconds histogram"));
    let (status, _) = http_get(&addr, "/nothing");
    assert_eq!(status, 404);
    // Each run was recorded, as `run`'s are.
    let runs: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM redis_flusher_runs", &[])
        .unwrap()
        .get(0);
    assert!(runs as f64 >= ok, "{runs} runs recorded, {ok} counted");

    let (out, took) = stop(child, Duration::from_secs(10));
    out.expect(0);
    assert!(took < Duration::from_secs(3), "took {took:?} to stop");
    assert!(out.stderr.contains("stopped as asked"), "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "serve prints nothing on stdout: {}",
        out.stdout
    );
    assert_eq!(env.total(), first + second);
    assert!(env.keys(&env.prefix).is_empty() && env.journals().is_empty());
}

#[test]
fn a_failing_serve_keeps_running_and_its_health_says_why() {
    let env = TestEnv::new(10);
    let addr = format!("127.0.0.1:{}", free_port());
    // Nothing listens on this port: every run fails to connect.
    let closed = free_port().to_string();
    let mut cmd = env.cmd();
    // A long --max-age: what turns /healthz is five failures in a row.
    cmd.args([
        "serve",
        "--interval",
        "200ms",
        "--max-age",
        "1h",
        "--listen",
        &addr,
    ])
    .env("DB_PORT", &closed)
    .env("REDIS_FLUSHER_CONNECT_TIMEOUT", "1")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Ready once a run has finished, failed or not.
    wait_for_http(&addr, "/readyz", Duration::from_secs(20), |s, _| s == 200);
    let (status, why) = wait_for_http(&addr, "/healthz", Duration::from_secs(30), |s, _| s == 503);
    assert_eq!(status, 503);
    assert!(
        why.starts_with("unhealthy: the last ")
            && why.contains(" runs failed")
            && why.contains("could not connect to PostgreSQL"),
        "{why}"
    );
    let (_, page) = http_get(&addr, "/metrics");
    assert!(
        sample(&page, "redis_flusher_runs_total{result=\"failed\"}").unwrap_or(0.0) >= 5.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, "redis_flusher_runs_total{result=\"ok\"}"),
        Some(0.0)
    );
    let (out, _) = stop(child, Duration::from_secs(10));
    out.expect(0);
}

#[test]
fn two_serve_replicas_are_a_hot_standby_and_count_everything_once() {
    let env = TestEnv::new(3000);
    let stop_writers = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = start_writers(&env, 2, 3000, &stop_writers);
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let args = |addr| {
        [
            "--interval",
            "300ms",
            "--listen",
            addr,
            "--batch-size",
            "500",
        ]
    };
    let one = spawn_serve(&env, &args(&a));
    let two = spawn_serve(&env, &args(&b));
    std::thread::sleep(Duration::from_secs(4));
    stop_writers.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut known, mut unknown) = (0, 0);
    for w in writers {
        let (k, u) = w.join().unwrap();
        known += k;
        unknown += u;
    }
    std::thread::sleep(Duration::from_secs(1));
    let runs = |addr: &str, result: &str| {
        sample(
            &http_get(addr, "/metrics").1,
            &format!("redis_flusher_runs_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (ok, locked) = (
        runs(&a, "ok") + runs(&b, "ok"),
        runs(&a, "locked") + runs(&b, "locked"),
    );
    assert_eq!(runs(&a, "failed") + runs(&b, "failed"), 0.0);
    let (out_one, _) = stop(one, Duration::from_secs(20));
    let (out_two, _) = stop(two, Duration::from_secs(20));
    out_one.expect(0);
    out_two.expect(0);
    env.wait_for_unlock();
    env.run(&["run"]).expect(0);
    eprintln!("{ok} runs flushed, {locked} found the other replica flushing");
    assert!(ok >= 2.0, "{ok} runs flushed");
    assert_eq!(env.total(), known, "every INCR of a known code, once");
    assert_eq!(env.ledger_unknown_hits(), unknown);
    assert!(env.keys(&env.prefix).is_empty() && env.journals().is_empty());
}

#[test]
fn prometheus_scrapes_serve_and_its_counters_equal_the_hits_sent() {
    let env = TestEnv::new(500);
    let sent = env.set_many(500, |i| i64::from(i % 7 + 1));
    let addr = format!("127.0.0.1:{}", free_port());
    let child = spawn_serve(&env, &["--interval", "1s", "--listen", &addr]);
    wait_until(Duration::from_secs(20), "the keys flushed", || {
        env.total() == sent
    });
    // The run ends (and is counted) a little after its rows are committed.
    wait_until(Duration::from_secs(20), "serve counted the keys", || {
        sample(
            &http_get(&addr, "/metrics").1,
            "redis_flusher_keys_flushed_total",
        ) == Some(500.0)
    });
    let prometheus = start_prometheus(&addr);
    // Its first scrape comes some seconds after it starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let hits = loop {
        if let Some(v) = prometheus.query("redis_flusher_hits_flushed_total") {
            break v;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped serve");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(hits, sent as f64);
    assert_eq!(
        prometheus.query("redis_flusher_keys_flushed_total"),
        Some(500.0)
    );
    assert_eq!(
        prometheus.query("sum(redis_flusher_runs_total{result=\"failed\"})"),
        Some(0.0)
    );
    assert_eq!(prometheus.query("up{job=\"redis-flusher\"}"), Some(1.0));
    let (out, _) = stop(child, Duration::from_secs(10));
    out.expect(0);
}

#[test]
fn run_pushes_its_metrics_to_a_pushgateway_and_a_failure_keeps_the_last_success() {
    let env = TestEnv::new(20);
    let gateway = start_pushgateway();
    let url = format!("http://{}", gateway.addr);
    let sent = env.set_many(20, i64::from);
    env.run(&["run", "--metrics-push-url", &url]).expect(0);
    let page = http_get(&gateway.addr, "/metrics").1;
    let group = format!(
        "{{job=\"redis-flusher\",journal_prefix=\"{}\"}}",
        env.journal_prefix
    );
    let metric = |page: &str, name: &str| {
        page.lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains(&format!("journal_prefix=\"{}\"", env.journal_prefix))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        metric(&page, "redis_flusher_last_run_hits{"),
        Some(sent as f64),
        "{page}"
    );
    assert_eq!(metric(&page, "redis_flusher_last_run_keys{"), Some(20.0));
    assert_eq!(metric(&page, "redis_flusher_last_run_success{"), Some(1.0));
    let success = metric(&page, "redis_flusher_last_success_timestamp_seconds{").expect(&group);
    // A run that fails (its table is gone) says so, and keeps the last success time.
    env.set("c1", "5");
    let out = env.run(&["run", "--metrics-push-url", &url, "--table", "nope"]);
    out.expect(2);
    let page = http_get(&gateway.addr, "/metrics").1;
    assert_eq!(
        metric(&page, "redis_flusher_last_run_success{"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "redis_flusher_last_success_timestamp_seconds{"),
        Some(success)
    );
    // A gateway that is down does not change a run's outcome.
    drop(gateway);
    let out = env.run(&["run", "--metrics-push-url", &url]);
    out.expect(0);
    assert!(
        out.stderr
            .contains("could not push the run's metrics to the Pushgateway"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), sent + 5);
}

#[test]
fn runs_ping_a_cron_monitor_at_start_and_end_with_the_exit_code() {
    let env = TestEnv::new(5);
    let monitor = PingRecorder::start(200);
    // The token in the URL's path is a secret.
    let url = format!("http://{}/ping/s3cr3t-t0ken", monitor.addr);
    env.set_many(5, |_| 3);
    env.run(&["run", "--ping-url", &url]).expect(0);
    let out = env.run(&["run", "--ping-url", &url, "--table", "nope"]);
    out.expect(2);
    let pings = monitor.pings();
    let seen: Vec<(&str, &str)> = pings
        .iter()
        .map(|p| (p.method.as_str(), p.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST", "/ping/s3cr3t-t0ken/start"),
            ("POST", "/ping/s3cr3t-t0ken/0"),
            ("POST", "/ping/s3cr3t-t0ken/start"),
            ("POST", "/ping/s3cr3t-t0ken/2"),
        ]
    );
    assert!(
        pings[1].body.starts_with("flushed 5 keys (15 hits)"),
        "{:?}",
        pings[1]
    );
    assert!(pings[3].body.contains("did not start"), "{:?}", pings[3]);
    // A monitor that answers 500, or none at all, changes nothing but a warning.
    let failing = PingRecorder::start(500);
    let out = env.run(&[
        "run",
        "--ping-url",
        &format!("http://{}/p/s3cr3t-t0ken", failing.addr),
    ]);
    out.expect(0);
    assert!(
        out.stderr.contains("could not ping the monitor"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("HTTP 500"), "{}", out.stderr);
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    // A URL that cannot be sent to is a setting to fix, before anything runs.
    let out = env.run(&["run", "--ping-url", "hc-ping.com/s3cr3t-t0ken"]);
    out.expect(2);
    assert!(
        out.stderr.contains("`REDIS_FLUSHER_PING_URL`"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    assert_eq!(env.total(), 15);
}

#[test]
fn serve_refuses_what_it_cannot_do_at_start_with_exit_2() {
    let env = TestEnv::new(1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = env.run(&["serve", "--listen", &addr]);
    out.expect(2);
    assert!(out.stderr.contains("cannot listen on"), "{}", out.stderr);
    let out = env.run(&["serve", "--interval", "0"]);
    out.expect(2);
    assert!(out.stderr.contains("`--interval`"), "{}", out.stderr);
    let out = env.run(&["serve", "--interval", "soon"]);
    out.expect(2);
    let out = env.run(&["serve", "--metrics-push-url", "ftp://gw/x"]);
    out.expect(2);
    // Nothing was flushed, or even tried.
    let runs: bool = env
        .pg()
        .query_one("SELECT to_regclass('redis_flusher_runs') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!runs);
}

/// A stop that waits on a row the app holds locked gives up at `--shutdown-timeout`: exit 0,
/// nothing lost (the batch waits in its journal, and the next run applies it).
#[test]
fn a_stop_that_cannot_finish_ends_at_the_shutdown_timeout_and_loses_nothing() {
    let env = TestEnv::new(10);
    let sent = env.set_many(10, |_| 1);
    let mut holder = env.pg();
    let mut lock = holder.transaction().unwrap();
    lock.batch_execute("SELECT * FROM urls WHERE short_code = 'c3' FOR UPDATE")
        .unwrap();
    let mut cmd = env.cmd();
    cmd.args(["run", "--lock-timeout", "60", "--shutdown-timeout", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Its batch is claimed, and its UPDATE waits for the row.
    wait_until(Duration::from_secs(20), "the batch claimed", || {
        !env.journals().is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (out, took) = stop(child, Duration::from_secs(10));
    out.expect(0);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(out.stderr.contains("--shutdown-timeout"), "{}", out.stderr);
    lock.rollback().unwrap();
    assert_eq!(env.total(), 0);
    assert_eq!(env.journals().len(), 1, "the batch waits in its journal");
    env.wait_for_unlock();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), sent);
    let _ = servers();
}
