//! What an operator uses around the flush: `check`, `status`, the metrics file, the progress
//! line, JSON logs, completions and the man page. Real servers, exact figures.

use std::collections::BTreeMap;

use crate::common::{start_redis, Outcome, TestEnv};

/// One of `check --json`'s findings.
#[derive(Debug)]
struct Found {
    level: String,
    code: String,
    message: String,
}

fn findings(out: &Outcome) -> Vec<Found> {
    out.json()["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| Found {
            level: f["level"].as_str().expect("level").to_owned(),
            code: f["code"].as_str().expect("code").to_owned(),
            message: f["message"].as_str().expect("message").to_owned(),
        })
        .collect()
}

/// The level of the one finding with `code` whose message contains `needle` (its stable code
/// says what was checked; the message, which the test reads too, says it to people).
fn level_of(found: &[Found], code: &str, needle: &str) -> String {
    let hits: Vec<&Found> = found
        .iter()
        .filter(|f| f.code == code && f.message.contains(needle))
        .collect();
    assert_eq!(hits.len(), 1, "findings {code} with {needle:?}: {found:#?}");
    hits[0].level.clone()
}

#[test]
fn check_passes_a_good_setup_and_warns_about_what_will_hurt() {
    let env = TestEnv::new(2);
    let out = env.run(&["check", "--json"]);
    out.expect(0);
    let found = findings(&out);
    assert!(found.iter().all(|f| f.level != "fail"), "{found:#?}");
    // The test table's count column is integer, and the private Redis keeps nothing on disk.
    assert_eq!(
        level_of(
            &found,
            "column.count_type",
            "`urls.access_count` is integer"
        ),
        "warn"
    );
    assert!(found.iter().any(|f| f
        .message
        .contains("ALTER TABLE \"urls\" ALTER COLUMN \"access_count\" TYPE bigint")));
    assert_eq!(
        level_of(&found, "redis.persistence", "neither AOF nor RDB"),
        "warn"
    );
    assert_eq!(
        level_of(&found, "table.index", "`short_code` is indexed"),
        "ok"
    );
    assert_eq!(
        level_of(&found, "role.privileges", "may SELECT and UPDATE `urls`"),
        "ok"
    );
    assert_eq!(
        level_of(
            &found,
            "own_table.creatable",
            "table `redis_flusher_batches` does not exist yet; the first run creates it"
        ),
        "ok"
    );
    assert_eq!(
        level_of(&found, "redis.scripting", "may run Lua scripts"),
        "ok"
    );
    assert_eq!(
        level_of(&found, "redis.eviction", "maxmemory-policy is noeviction"),
        "ok"
    );
    assert_eq!(
        found.iter().filter(|f| f.level == "warn").count(),
        2,
        "{found:#?}"
    );
    // Changed nothing: no ledger was created.
    let ledger: bool = env
        .pg()
        .query_one(
            "SELECT to_regclass('redis_flusher_batches') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!ledger);

    let text = env.run(&["check"]);
    text.expect(0);
    assert!(
        text.stdout
            .contains("\nWARN  `urls.access_count` is integer"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.ends_with("a flush would work; 2 warning(s)\n"),
        "{}",
        text.stdout
    );
}

#[test]
fn check_fails_what_would_stop_a_flush_and_says_what_to_do() {
    let env = TestEnv::new(2);
    // A bigint count column: no warning about it.
    env.pg()
        .batch_execute("ALTER TABLE urls ALTER COLUMN access_count TYPE bigint")
        .unwrap();
    let found = findings(env.run(&["check", "--json"]).expect(0));
    assert_eq!(
        level_of(&found, "column.count_type", "`urls.access_count` is bigint"),
        "ok"
    );

    // A role without UPDATE, and without the right to create the ledger.
    let role = format!("flusher_check_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT ON urls TO {role}; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .unwrap();
    let out = env.run_with(&["check", "--json"], &[("DB_USER", &role)]);
    out.expect(1);
    let found = findings(&out);
    assert_eq!(
        level_of(
            &found,
            "role.privileges",
            "lacks UPDATE on `urls`: GRANT UPDATE ON \"urls\""
        ),
        "fail"
    );
    assert_eq!(
        level_of(
            &found,
            "own_table.uncreatable",
            "table `redis_flusher_batches` and table `redis_flusher_runs` and table \
             `redis_flusher_leases` and table `redis_flusher_quarantine` are missing and this \
             role may not create them"
        ),
        "fail"
    );
    assert!(found.iter().any(|f| f
        .message
        .contains("CREATE TABLE IF NOT EXISTS \"redis_flusher_runs\"")));
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();

    // A column that is not there, and a table that is not there.
    let out = env.run(&["check", "--json", "--count-column", "hits"]);
    out.expect(1);
    assert_eq!(
        level_of(
            &findings(&out),
            "table.lookup",
            "has no column `hits`: change `--count-column`"
        ),
        "fail"
    );
    let out = env.run(&["check", "--table", "nope"]);
    out.expect(1);
    assert!(
        out.stdout.contains("FAIL  table `nope` does not exist"),
        "{}",
        out.stdout
    );
    // The private Redis keeps nothing on disk: the one warning.
    assert!(
        out.stdout
            .ends_with("1 problem(s) would stop a flush, 1 warning(s)\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_reads_redis_persistence_eviction_and_acl() {
    let redis = start_redis(&["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]);
    let env = TestEnv::on(redis.port, crate::common::servers().pg_port, 2);
    let found = findings(env.run(&["check", "--json"]).expect(0));
    assert_eq!(
        level_of(&found, "redis.persistence", "AOF persistence is on"),
        "ok"
    );
    assert_eq!(
        level_of(&found, "redis.eviction", "maxmemory-policy is allkeys-lru"),
        "warn"
    );

    // A user that may not run scripts (nor CONFIG): claims could not work.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("noscripts")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-@scripting")
        .arg("-config")
        .query::<()>(&mut env.redis())
        .unwrap();
    let out = env.run_with(
        &["check", "--json"],
        &[
            ("REDIS_USERNAME", "noscripts"),
            ("REDIS_PASSWORD", "secret"),
        ],
    );
    out.expect(1);
    let found = findings(&out);
    assert_eq!(
        level_of(&found, "redis.scripting", "may not run Lua scripts"),
        "fail"
    );
    // CONFIG refused: AOF still read from INFO.
    assert_eq!(
        level_of(&found, "redis.persistence", "AOF persistence is on"),
        "ok"
    );
    assert!(!out.stdout.contains("secret") && !out.stderr.contains("secret"));
}

#[test]
fn check_reports_a_server_it_cannot_reach() {
    let env = TestEnv::new(1);
    let out = env.run_with(
        &["check"],
        &[("DB_PORT", &crate::common::free_port().to_string())],
    );
    out.expect(1);
    assert!(
        out.stdout.contains("FAIL  could not connect to PostgreSQL"),
        "{}",
        out.stdout
    );
    // Redis is still checked.
    assert!(
        out.stdout.contains("ok    Redis at 127.0.0.1"),
        "{}",
        out.stdout
    );
}

#[test]
fn status_shows_waiting_pending_and_the_last_runs() {
    let env = TestEnv::new(100);
    // No run yet: healthy only if told nothing about age.
    let out = env.run(&["status", "--json", "--max-age", "15m"]);
    out.expect(1);
    assert_eq!(out.json()["healthy"], false);
    assert!(out.json()["last_runs"].as_array().unwrap().is_empty());

    env.set_many(10, |_| 3); // 10 keys, 30 hits
    env.set("ghost", "4");
    env.run(&["run"]).expect(0);
    env.set_many(20, i64::from); // 20 keys, 210 hits
    env.run(&["run"]).expect(0);
    // A killed run leaves one journal: 5 keys, 10 hits.
    env.set_many(5, |_| 2);
    env.kill_after_first_claim();
    // Waiting now: 7 counters with 7 hits each, and one bad key.
    for i in 50..57 {
        env.set(&format!("c{i}"), "7");
    }
    env.set("bad", "x");

    let out = env.run(&["status", "--json", "--max-age", "1h"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(
        j["waiting"],
        serde_json::json!({"keys": 7, "hits": 49, "bad_keys": 1,
            "bad_examples": [format!("{} (value is not an integer)", env.key("bad"))]})
    );
    assert_eq!(
        j["pending"],
        serde_json::json!({"batches": 1, "keys": 5, "hits": 10, "other_targets": 0,
            "target_known": true})
    );
    let runs = j["last_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the killed run recorded nothing");
    assert_eq!(
        (&runs[0]["status"], &runs[0]["keys"], &runs[0]["hits"]),
        (
            &serde_json::json!("ok"),
            &serde_json::json!(20),
            &serde_json::json!(210)
        )
    );
    assert_eq!(
        (
            &runs[1]["keys"],
            &runs[1]["hits"],
            &runs[1]["unknown_codes"],
            &runs[1]["unknown_hits"]
        ),
        (
            &serde_json::json!(11),
            &serde_json::json!(34),
            &serde_json::json!(1),
            &serde_json::json!(4)
        )
    );
    assert_eq!(j["healthy"], true);
    assert!(j["last_success_age_seconds"].as_f64().unwrap() < 60.0);
    // Reading changed nothing.
    assert_eq!(env.journals().len(), 1);
    assert_eq!(env.get(&env.key("c50")), Some(b"7".to_vec()));

    let text = env.run(&["status"]);
    text.expect(0);
    assert!(
        text.stdout.contains(&format!(
            "waiting in Redis: 7 counters (49 hits) under {}*, and 1 bad key a run leaves alone",
            env.prefix
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("pending journals: 1 batch (5 keys, 10 hits)"),
        "{}",
        text.stdout
    );

    // The last success an hour and a half ago: unhealthy at --max-age 1h.
    env.pg()
        .batch_execute(
            "UPDATE redis_flusher_runs SET finished_at = now() - interval '90 minutes', \
             started_at = now() - interval '91 minutes'",
        )
        .unwrap();
    let out = env.run(&["status", "--max-age", "1h"]);
    out.expect(1);
    assert!(
        out.stdout
            .contains("health: UNHEALTHY: last successful run 1h 30m"),
        "{}",
        out.stdout
    );
}

/// The metrics file, parsed by a Prometheus text-format parser: name → value.
fn metrics(path: &std::path::Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).expect("read the metrics file");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the metrics file parses");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("{}: not a gauge: {other:?}", s.metric),
            };
            (s.metric, v)
        })
        .collect()
}

#[test]
fn the_metrics_file_holds_the_last_runs_figures() {
    let env = TestEnv::new(10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis_flusher.prom");
    let file = path.to_str().unwrap();
    env.set_many(10, i64::from); // 55 hits
    env.set("ghost", "5");
    env.set("bad", "x");
    env.run(&["run", "--metrics-file", file]).expect(0);
    let m = metrics(&path);
    assert_eq!(m["redis_flusher_last_run_success"], 1.0);
    assert_eq!(m["redis_flusher_last_run_keys"], 11.0);
    assert_eq!(m["redis_flusher_last_run_hits"], 60.0);
    assert_eq!(m["redis_flusher_last_run_unknown_codes"], 1.0);
    assert_eq!(m["redis_flusher_last_run_unknown_hits"], 5.0);
    assert_eq!(m["redis_flusher_last_run_bad_keys"], 1.0);
    assert_eq!(m["redis_flusher_last_run_batches"], 1.0);
    assert_eq!(m["redis_flusher_pending_journals"], 0.0);
    let ended = m["redis_flusher_last_run_timestamp_seconds"];
    assert_eq!(m["redis_flusher_last_success_timestamp_seconds"], ended);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ended).abs() < 60.0, "ended {ended}, now {now}");

    // A run that failed (here a setup error, exit 2): success 0, the last success kept, and
    // only the file itself in the dir.
    env.set("c1", "1");
    env.run(&["run", "--metrics-file", file, "--count-column", "nope"])
        .expect(2);
    let m = metrics(&path);
    assert_eq!(m["redis_flusher_last_run_success"], 0.0);
    assert_eq!(m["redis_flusher_last_success_timestamp_seconds"], ended);
    assert!(m["redis_flusher_last_run_timestamp_seconds"] >= ended);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "a temp file was left behind");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let env = TestEnv::new(3);
    env.set_many(3, |_| 1);
    env.set("ghost", "1");
    let out = env.run(&["--log-format", "json", "run"]);
    out.expect(0);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{}", out.stderr);
    for l in &lines {
        assert!(l["ts"].as_str().unwrap().ends_with('Z'), "{l}");
        assert!(
            ["INFO", "WARN", "ERROR"].contains(&l["level"].as_str().unwrap()),
            "{l}"
        );
    }
    let last = lines.last().unwrap()["msg"].as_str().unwrap();
    assert!(
        last.starts_with("flushed 4 keys (4 hits) into 3 rows"),
        "{last}"
    );
    // The environment variable works as well.
    let out = env.run_with(&["run"], &[("REDIS_FLUSHER_LOG_FORMAT", "json")]);
    out.expect(0);
    assert!(out.stderr.starts_with('{'), "{}", out.stderr);
}

#[test]
fn rust_log_debug_shows_our_decisions_and_not_every_code_sent_to_postgres() {
    let env = TestEnv::new(3);
    env.set_many(3, |_| 1);
    let out = env.run_with(&["run"], &[("RUST_LOG", "debug")]);
    out.expect(0);
    assert!(out.stderr.contains("DEBUG batch "), "{}", out.stderr);
    assert!(
        !out.stderr.contains("executing statement"),
        "{}",
        out.stderr
    );
    // Naming the library asks for its lines, parameters and all.
    env.set_many(3, |_| 1);
    let out = env.run_with(&["run"], &[("RUST_LOG", "info,tokio_postgres=debug")]);
    out.expect(0);
    assert!(out.stderr.contains("executing statement"), "{}", out.stderr);
    assert!(!out.stderr.contains("DEBUG batch "), "{}", out.stderr);
    assert_eq!(env.total(), 6);
}

/// Runs `redis-flusher <args>` on a pseudo-terminal (`script`), returning what it drew.
fn on_a_terminal(env: &TestEnv, args: &str) -> String {
    let bin = assert_cmd::cargo::cargo_bin("redis-flusher");
    let cmd = env.cmd();
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{} {args}", bin.display()), "/dev/null"])
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        // Without TERM (or with TERM=dumb) a terminal gets no progress line either.
        .env("TERM", "xterm")
        .current_dir(env.workdir.path())
        .output()
        .unwrap_or_else(|e| panic!("could not run `script` ({e}): install bsdutils"));
    env.wait_for_unlock();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_progress_line_only_on_a_terminal() {
    let env = TestEnv::new(30_000);
    env.set_many(30_000, |_| 1);
    let drawn = on_a_terminal(&env, "run --batch-size 1000");
    // The bar's own text, redrawn in place: `flushed 1,000 keys (1000 hits; 3000 claimed)`.
    assert!(drawn.contains(" claimed), "), "no progress line: {drawn}");
    assert!(
        drawn.contains("\r\x1b[2K"),
        "not redrawn in place: {drawn:?}"
    );
    assert_eq!(env.total(), 30_000);

    // Not a terminal (cron): plain lines only.
    env.set_many(30_000, |_| 1);
    let out = env.run(&["run", "--batch-size", "1000"]);
    out.expect(0);
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains('\x1b'),
        "{:?}",
        out.stderr
    );
    // A terminal, but --no-progress.
    env.set_many(30_000, |_| 1);
    let drawn = on_a_terminal(&env, "run --batch-size 1000 --no-progress");
    assert!(
        !drawn.contains(" claimed), ") && !drawn.contains('\x1b'),
        "{drawn:?}"
    );
    assert_eq!(env.total(), 90_000);
}

#[test]
fn completions_and_man_pages() {
    let env = TestEnv::new(0);
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        out.expect(0);
        for word in ["run", "check", "status", "max-age", "metrics-file"] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = env.run(&["man"]);
    out.expect(0);
    assert!(out.stdout.contains(".TH redis-flusher 1"), "{}", out.stdout);
    let dir = tempfile::tempdir().unwrap();
    env.run(&["man", "--dir", dir.path().to_str().unwrap()])
        .expect(0);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "redis-flusher-check.1",
            "redis-flusher-completions.1",
            "redis-flusher-demo.1",
            "redis-flusher-help.1",
            "redis-flusher-man.1",
            "redis-flusher-run.1",
            "redis-flusher-serve.1",
            "redis-flusher-status.1",
            "redis-flusher.1"
        ]
    );
    let run_page = std::fs::read_to_string(dir.path().join("redis-flusher-run.1")).unwrap();
    assert!(
        run_page.contains("REDIS_FLUSHER_METRICS_FILE"),
        "the page names the environment"
    );
}

/// The demo's tables in `env`'s database, named after `table`.
fn demo_tables(env: &TestEnv, table: &str) -> Vec<String> {
    env.pg()
        .query(
            "SELECT tablename::text FROM pg_tables WHERE tablename LIKE $1 ORDER BY 1",
            &[&format!("{table}%")],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn the_demo_flushes_exactly_and_clean_removes_every_table_and_key_it_made() {
    let env = TestEnv::new(3);
    let table = format!("demo_{}", env.n);
    let pattern = format!("{}*", env.prefix);
    let demo = ["demo", "--table", &table, "--pattern", &pattern];
    for round in 1..=2 {
        let out = env.run(&demo);
        out.expect(0);
        // The demo names its own target as its own, and says how to run it again as this
        // binary was run (a cargo build here, not on PATH).
        assert!(
            out.stderr.contains("; code column: the demo's own;"),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.contains("Try `cargo run -- demo` again"),
            "{}",
            out.stdout
        );
        let after = out
            .stdout
            .split("after the flush:")
            .nth(1)
            .unwrap_or_default();
        for (code, hits) in [
            ("about", 1),
            ("blog", 2),
            ("docs", 5),
            ("home", 3),
            ("pricing", 7),
        ] {
            assert!(
                after.contains(&format!("  {code:<10} {}\n", hits * round)),
                "round {round}, {code}: {}",
                out.stdout
            );
        }
    }
    assert_eq!(
        demo_tables(&env, &table),
        ["batches", "leases", "quarantine", "runs"]
            .iter()
            .map(|t| format!("{table}_{t}"))
            .chain([table.clone()])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(
        !env.keys(&format!("{table}_journal:")).is_empty(),
        "the journal index"
    );
    env.set("home", "4"); // a demo counter, left by a demo that failed
    env.set("c1", "2"); // not the demo's: must survive its clean

    let out = env.run(&["demo", "--clean", "--table", &table, "--pattern", &pattern]);
    out.expect(0);
    assert!(
        out.stdout.starts_with("removed 5 demo tables"),
        "{}",
        out.stdout
    );
    assert!(demo_tables(&env, &table).is_empty());
    assert!(env.keys(&format!("{table}_")).is_empty());
    assert_eq!(
        env.keys(&env.prefix),
        [env.key("c1")],
        "only the demo's keys go"
    );
    let out = env.run(&["demo", "--clean", "--table", &table, "--pattern", &pattern]);
    out.expect(0);
    assert!(
        out.stdout
            .starts_with("nothing to remove: no demo table, and none of the demo's keys"),
        "{}",
        out.stdout
    );

    // A table the demo did not make is never dropped.
    let out = env.run(&["demo", "--clean", "--table", "urls", "--pattern", &pattern]);
    out.expect(2);
    assert!(
        out.stderr
            .contains("table `urls` holds 3 rows the demo did not make"),
        "{}",
        out.stderr
    );
    assert_eq!(env.pg().query("SELECT 1 FROM urls", &[]).unwrap().len(), 3);
}

/// Whether anything accepts a connection on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn the_demo_starts_throwaway_servers_where_none_answer_and_removes_them() {
    let env = TestEnv::new(0);
    let (redis_port, pg_port) = (crate::common::free_port(), crate::common::free_port());
    let (redis_port_s, pg_port_s) = (redis_port.to_string(), pg_port.to_string());
    let nothing = [
        ("REDIS_PORT", redis_port_s.as_str()),
        ("DB_PORT", pg_port_s.as_str()),
    ];
    let out = env.run_with(&["demo"], &nothing);
    out.expect(0);
    assert!(out.stdout.contains("  pricing    7\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("the servers were throwaway ones"),
        "{}",
        out.stdout
    );
    let dirs: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split("(files in ").nth(1)?.split(')').next())
        .collect();
    assert_eq!(dirs.len(), 2, "a Redis and a PostgreSQL: {}", out.stderr);
    for dir in dirs {
        assert!(!std::path::Path::new(dir).exists(), "{dir} is left behind");
    }
    assert!(
        !listening(redis_port) && !listening(pg_port),
        "a server is left running"
    );

    // Without the programs, it says what to install, and starts nothing.
    let empty = tempfile::tempdir().unwrap();
    let out = env.run_with(
        &["demo"],
        &[
            nothing[0],
            nothing[1],
            ("PATH", empty.path().to_str().unwrap()),
        ],
    );
    out.expect(2);
    assert!(
        out.stderr.contains("`redis-server` is not installed")
            && out.stderr.contains("apt-get install redis-server"),
        "{}",
        out.stderr
    );
    // A configured server that is not local is never stood in for: the error is the error.
    let out = env.run_with(
        &["demo"],
        &[
            ("REDIS_HOST", "192.0.2.1"),
            ("REDIS_FLUSHER_CONNECT_TIMEOUT", "1"),
        ],
    );
    out.expect(1);
    assert!(!out.stderr.contains("throwaway"), "{}", out.stderr);
}
