//! The stress proof of exactly-once: servers that crash, hang or restart under a run, runs
//! that overlap, live traffic, and kills at random moments. Every test ends with the totals
//! compared, exactly, with what was written to Redis.
//!
//! Tests that break a server start their own; the others share this binary's private pair.
//! `REDIS_FLUSHER_KILLS=500 cargo test --test integration reliability::random_kills` is the long mode.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    finish_within, overlapping_runs_under_load, seeded_rng, servers, start_postgres, start_redis,
    TestEnv,
};

/// Starts `run` in the background with short timeouts, so that a broken server is noticed in
/// seconds.
fn spawn_run(env: &TestEnv, args: &[&str]) -> Child {
    let mut cmd = env.cmd();
    cmd.arg("run")
        .args(args)
        .env("REDIS_FLUSHER_COMMAND_TIMEOUT", "2")
        .env("REDIS_FLUSHER_STATEMENT_TIMEOUT", "2")
        .env("REDIS_FLUSHER_CONNECT_TIMEOUT", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start redis-flusher")
}

/// Enough keys that a debug build takes a second or more to flush them in small batches.
const KEYS: u32 = 40_000;
const SMALL_BATCHES: [&str; 4] = ["--batch-size", "500", "--claim-size", "100"];

fn assert_exact(env: &TestEnv, expected: i64) {
    assert_eq!(env.total(), expected, "sum(access_count)");
    assert!(env.journals().is_empty(), "journals left");
    assert!(env.keys(&env.prefix).is_empty(), "counters left");
}

#[test]
fn postgres_stopped_immediately_mid_run_loses_nothing() {
    let mut pg = start_postgres();
    let env = TestEnv::on(servers().redis_port, pg.port, KEYS);
    let expected = env.set_many(KEYS, |i| i64::from(i % 5 + 1));
    let run = spawn_run(&env, &SMALL_BATCHES);
    env.wait_for_ledger_rows(1);
    pg.stop_immediate();
    let (out, took) = finish_within(run, Duration::from_secs(15));
    out.expect(1);
    assert!(
        out.stderr.contains("PostgreSQL at"),
        "the error names the server: {}",
        out.stderr
    );
    eprintln!("the run exited {took:?} after Postgres stopped");
    // A run while Postgres is down fails fast, touching nothing.
    let (down, _) = finish_within(spawn_run(&env, &[]), Duration::from_secs(10));
    down.expect(1);
    assert!(
        down.stderr.contains("could not connect to PostgreSQL"),
        "{}",
        down.stderr
    );
    pg.restart();
    let applied = env.total();
    assert!(applied > 0 && applied < expected, "applied {applied}");
    env.run(&["run"]).expect(0);
    assert_exact(&env, expected);
}

#[test]
fn redis_killed_mid_run_and_restarted_with_its_aof_loses_nothing() {
    let mut redis = start_redis(&["--appendonly", "yes", "--appendfsync", "always"]);
    let env = TestEnv::on(redis.port, servers().pg_port, KEYS);
    let expected = env.set_many(KEYS, |i| i64::from(i % 5 + 1));
    let run = spawn_run(&env, &SMALL_BATCHES);
    env.wait_for_ledger_rows(1);
    redis.kill();
    let (out, took) = finish_within(run, Duration::from_secs(15));
    out.expect(1);
    assert!(out.stderr.contains("Redis"), "{}", out.stderr);
    eprintln!("the run exited {took:?} after Redis died");
    redis.restart();
    // The journals the dead run left came back with the AOF, and the next run applies them.
    env.run(&["run"]).expect(0);
    assert_exact(&env, expected);
}

#[test]
fn a_hung_postgres_is_given_up_on_within_its_timeouts() {
    let pg = start_postgres();
    let env = TestEnv::on(servers().redis_port, pg.port, KEYS);
    let expected = env.set_many(KEYS, |i| i64::from(i % 5 + 1));
    let run = spawn_run(&env, &[&SMALL_BATCHES[..], &["--json"]].concat());
    env.wait_for_ledger_rows(1);
    pg.freeze();
    // A batch's transaction may take twice (statement timeout 2 s + 5 s) before the watchdog
    // gives up; a run that never ends fails here.
    let (out, took) = finish_within(run, Duration::from_secs(30));
    pg.thaw();
    out.expect(1);
    assert!(out.stderr.contains("no answer in"), "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["status"], "failed");
    assert!(j["batches"].as_u64().unwrap() >= 1, "{j}");
    eprintln!("the run gave up {took:?} after Postgres froze");
    env.wait_for_unlock();
    env.run(&["run"]).expect(0);
    assert_exact(&env, expected);
}

#[test]
fn a_hung_redis_is_given_up_on_within_its_command_timeout() {
    let redis = start_redis(&[]);
    let env = TestEnv::on(redis.port, servers().pg_port, KEYS);
    let expected = env.set_many(KEYS, |i| i64::from(i % 5 + 1));
    let run = spawn_run(&env, &SMALL_BATCHES);
    env.wait_for_ledger_rows(1);
    redis.freeze();
    let (out, took) = finish_within(run, Duration::from_secs(15));
    redis.thaw();
    out.expect(1);
    assert!(out.stderr.contains("Redis"), "{}", out.stderr);
    eprintln!("the run gave up {took:?} after Redis froze");
    env.run(&["run"]).expect(0);
    assert_exact(&env, expected);
}

#[test]
fn a_postgres_that_accepts_but_never_answers_fails_the_connect() {
    let pg = start_postgres();
    let env = TestEnv::on(servers().redis_port, pg.port, 3);
    env.set("c1", "4");
    pg.freeze();
    let (out, took) = finish_within(spawn_run(&env, &[]), Duration::from_secs(20));
    pg.thaw();
    out.expect(1);
    assert!(
        out.stderr.contains("connecting to PostgreSQL"),
        "{}",
        out.stderr
    );
    eprintln!("the connect was given up after {took:?}");
    assert_eq!(env.get(&env.key("c1")), Some(b"4".to_vec()));
    env.run(&["run"]).expect(0);
    assert_exact(&env, 4);
}

/// A mixed workload: known codes (some negative), unknown codes, bad keys. Returns the hits
/// of known and of unknown codes it wrote.
fn mixed_workload(env: &TestEnv, known_codes: u32, unknown_codes: u32) -> (i64, i64) {
    let known: Vec<(String, i64)> = (1..=known_codes)
        .map(|i| {
            (
                format!("c{i}"),
                if i % 10 == 0 {
                    -3
                } else {
                    i64::from(i % 7 + 1)
                },
            )
        })
        .collect();
    let unknown: Vec<(String, i64)> = (1..=unknown_codes)
        .map(|i| (format!("u{i}"), i64::from(i % 4 + 1)))
        .collect();
    env.incr_many(known.iter().chain(&unknown).map(|(c, n)| (c.as_str(), *n)));
    (
        known.iter().map(|(_, n)| n).sum(),
        unknown.iter().map(|(_, n)| n).sum(),
    )
}

/// Bad keys that every run must leave exactly as they are.
const BAD: [(&str, &str); 3] = [
    ("bad-text", "abc"),
    ("bad-float", "1.5"),
    ("bad-big", "99999999999999999999"),
];

fn set_bad_keys(env: &TestEnv) {
    for (code, value) in BAD {
        env.set(code, value);
    }
}

fn assert_bad_keys_intact(env: &TestEnv) {
    for (code, value) in BAD {
        assert_eq!(
            env.get(&env.key(code)),
            Some(value.as_bytes().to_vec()),
            "{code}"
        );
    }
}

/// Everything accounted for: known hits in the table, unknown hits in the ledger (and in the
/// parking hash with `--keep-unknown`), bad keys untouched, no counter or journal left.
fn assert_accounted(env: &TestEnv, known: i64, unknown: i64, parked: bool, when: &str) {
    assert_eq!(env.total(), known, "sum(access_count) {when}");
    assert_eq!(
        env.ledger_unknown_hits(),
        unknown,
        "unknown hits in the ledger {when}"
    );
    if parked {
        let values: Vec<i64> = redis::cmd("HVALS")
            .arg(&env.unknown_key)
            .query(&mut env.redis())
            .expect("HVALS");
        assert_eq!(values.iter().sum::<i64>(), unknown, "parked hits {when}");
    }
    assert_bad_keys_intact(env);
    assert!(env.journals().is_empty(), "journals left {when}");
    assert_eq!(
        env.keys(&env.prefix).len(),
        BAD.len(),
        "counters left {when}"
    );
}

#[test]
fn a_kill_at_every_step_loses_and_doubles_nothing_on_one_connection() {
    a_kill_at_every_step("1", false);
}

/// Four connections: a kill finds several batches in flight, some committed, some not.
#[test]
fn a_kill_at_every_step_loses_and_doubles_nothing_on_four_connections() {
    a_kill_at_every_step("4", false);
}

/// Batches of 10 keys gathered four to a transaction through the stage (a backlog's shape),
/// on one connection and on four.
#[test]
fn a_kill_at_every_step_of_gathered_batches_loses_and_doubles_nothing() {
    a_kill_at_every_step("1", true);
    a_kill_at_every_step("4", true);
}

fn a_kill_at_every_step(connections: &str, gathered: bool) {
    // 343 keys in 9 batches (or 35 batches of 10, gathered in 9 transactions): at a kill, at
    // most the batches that reached the point and one on each other connection are
    // committed, never all of them.
    let args = [
        "run",
        "--batch-size",
        "40",
        "--claim-size",
        "20",
        "--pg-connections",
        connections,
    ];
    let knob: &[(&str, &str)] = if gathered {
        &[("REDIS_FLUSHER_TEST_BATCH_KEYS", "10")]
    } else {
        &[]
    };
    let with = |fault: &'static str| -> Vec<(&str, &str)> {
        let mut env = knob.to_vec();
        env.push(("REDIS_FLUSHER_FAULT", fault));
        env
    };
    // (kill first at, then kill the recovering run at): recovery points need journals left
    // by a first kill.
    let stage_plan: &[(&str, Option<&str>)] = if gathered {
        &[("after_stage", None), ("after_stage:6", None)]
    } else {
        &[]
    };
    let plan: Vec<(&'static str, Option<&'static str>)> = [
        ("after_scan", None),
        ("after_claim", None),
        ("after_claim:4", None),
        ("before_commit", None),
        ("before_commit:3", None),
        ("after_commit", None),
        ("after_commit:3", None),
        ("after_claim:5", Some("recovery_before_commit")),
        ("after_claim:5", Some("recovery_after_commit")),
        ("after_commit:2", Some("recovery_after_commit")),
    ]
    .into_iter()
    .chain(stage_plan.iter().copied())
    .collect();
    for (i, (first, second)) in plan.iter().enumerate() {
        let park = i % 2 == 1;
        let args: Vec<&str> = args
            .iter()
            .copied()
            .chain(park.then_some("--keep-unknown"))
            .collect();
        // A recovery point needs a journal the first kill left unapplied. Whether the claimer
        // had begun the next batch when a commit's kill hit is a race, so such a plan starts
        // again on fresh data until it had (one try is almost always enough).
        let mut attempts = 0;
        let (env, known, unknown) = loop {
            attempts += 1;
            let env = TestEnv::new(300);
            set_bad_keys(&env);
            let (known, unknown) = mixed_workload(&env, 300, 40);
            env.run_with(&args, &with(first)).expect_killed();
            if second.is_none() || unapplied_journals(&env) > 0 || attempts == 10 {
                break (env, known, unknown);
            }
        };
        if let Some(second) = second {
            assert!(
                unapplied_journals(&env) > 0,
                "{first} left no journal to apply in recovery, {attempts} times"
            );
            env.run_with(&args, &with(second)).expect_killed();
        }
        assert!(
            env.total() < known,
            "killed at {first}, yet everything was applied"
        );
        let out = env.run_with(&[&args[..], &["--json"]].concat(), knob);
        out.expect(0);
        assert_eq!(out.json()["bad_keys"], 3);
        assert_accounted(
            &env,
            known,
            unknown,
            park,
            &format!("after a kill at {first} then {second:?}"),
        );
    }
}

/// Journals whose batch is not in the ledger: a recovering run applies them (the others it
/// only deletes).
fn unapplied_journals(env: &TestEnv) -> usize {
    let mut pg = env.pg();
    env.journals()
        .iter()
        .filter(|key| {
            let id = &key[env.journal_prefix.len()..];
            let applied: i64 = pg
                .query_one(
                    "SELECT count(*) FROM redis_flusher_batches WHERE batch_id = $1",
                    &[&id],
                )
                .expect("look up the ledger")
                .get(0);
            applied == 0
        })
        .count()
}

/// How many random kills: `REDIS_FLUSHER_KILLS` (the long mode: 500), else 20.
fn kills_wanted() -> usize {
    std::env::var("REDIS_FLUSHER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn random_kills_while_20k_keys_flush_lose_and_double_nothing_on_one_connection() {
    random_kills("1", false);
}

/// Four connections: most kills find several transactions in flight.
#[test]
fn random_kills_while_20k_keys_flush_lose_and_double_nothing_on_four_connections() {
    random_kills("4", false);
}

/// Batches of 500 keys gathered four to a transaction through the stage (a backlog's shape).
#[test]
fn random_kills_while_gathered_batches_flush_lose_and_double_nothing() {
    random_kills("2", true);
}

fn random_kills(connections: &str, gathered: bool) {
    const CODES: u32 = 20_000;
    const UNKNOWN: u32 = 500;
    let args = [
        "run",
        "--batch-size",
        "2000",
        "--claim-size",
        "250",
        "--pg-connections",
        connections,
    ];
    let (seed, mut rng) = seeded_rng();
    let env = TestEnv::new(CODES);
    let knob: &[(&str, &str)] = if gathered {
        &[("REDIS_FLUSHER_TEST_BATCH_KEYS", "500")]
    } else {
        &[]
    };
    let cmd = || {
        let mut cmd = env.cmd();
        cmd.envs(knob.iter().copied()).args(args);
        cmd
    };
    set_bad_keys(&env);
    // INCRBY 1..5 on every code, known and unknown; returns the hits of each kind.
    let add_hits = |rng: &mut fastrand::Rng| -> (i64, i64) {
        let incrs: Vec<(String, i64)> = (1..=CODES)
            .map(|i| format!("c{i}"))
            .chain((1..=UNKNOWN).map(|i| format!("u{i}")))
            .map(|c| (c, rng.i64(1..=5)))
            .collect();
        env.incr_many(incrs.iter().map(|(c, n)| (c.as_str(), *n)));
        let of = |prefix: char| -> i64 {
            incrs
                .iter()
                .filter(|(c, _)| c.starts_with(prefix))
                .map(|(_, n)| n)
                .sum()
        };
        (of('c'), of('u'))
    };

    // How long one run of these keys takes here, so that kills land all through it.
    // (The quickest of three: the first run is slower, with cold caches and a new ledger.)
    let (mut known, mut unknown) = (0, 0);
    let mut full = Duration::MAX;
    for _ in 0..3 {
        let (k, u) = add_hits(&mut rng);
        known += k;
        unknown += u;
        let mut cmd = cmd();
        cmd.stderr(Stdio::null());
        let t = Instant::now();
        let status = cmd.status().expect("run redis-flusher");
        full = full.min(t.elapsed());
        assert!(status.success(), "a timing run failed: {status}");
        env.wait_for_unlock();
    }
    assert_accounted(&env, known, unknown, false, "after the timing runs");

    let kills = kills_wanted();
    let (mut killed, mut finished_first, mut recovery_kills) = (0, 0, 0);
    for round in 0..kills {
        let (k, u) = add_hits(&mut rng);
        known += k;
        unknown += u;
        // Half the rounds kill the recovering run too.
        let times = if rng.bool() { 2 } else { 1 };
        for k in 0..times {
            let mut child = cmd();
            child.stdout(Stdio::null()).stderr(Stdio::null());
            let mut child = child.spawn().expect("start redis-flusher");
            // The recovering run has only what the first one left: a shorter window.
            let window = if k == 0 { 0.9 } else { 0.3 };
            let at = full.mul_f64(rng.f64() * window);
            let started = Instant::now();
            let ended_early = loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    break Some((status, started.elapsed()));
                }
                if started.elapsed() >= at {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let ended_early = ended_early.or_else(|| {
                let _ = child.kill(); // SIGKILL
                let status = child.wait().expect("wait");
                status.code().is_some().then(|| (status, started.elapsed()))
            });
            match ended_early {
                Some((status, took)) => {
                    assert!(status.success(), "round {round}: a run failed: {status}");
                    finished_first += 1;
                    // Runs got quicker than the timing runs (caches, a quieter machine):
                    // aim the next kills inside this one's length.
                    if k == 0 {
                        full = full.min(took);
                    }
                }
                None => {
                    killed += 1;
                    recovery_kills += usize::from(k == 1);
                }
            }
            env.wait_for_unlock();
        }
        env.run_with(&args, knob).expect(0);
        assert_accounted(
            &env,
            known,
            unknown,
            false,
            &format!("in round {round} (seed {seed})"),
        );
    }
    eprintln!(
        "{kills} rounds: {killed} runs killed ({recovery_kills} of them the run right after \
         a killed one, which recovers its journals first), {finished_first} ended before \
         their kill; a whole run took {full:?}; {known} known hits and {unknown} unknown, \
         all accounted for after every round"
    );
    assert!(
        killed >= kills / 2,
        "only {killed} of {kills} kills hit a running run"
    );
}

#[test]
fn four_runs_at_once_twenty_times_under_load_count_everything_once() {
    let env = TestEnv::new(3000);
    let o = overlapping_runs_under_load(&env, 20, &[]);
    assert!(o.ran >= 20, "every round has one run that takes the lock");
    assert!(o.known > 10_000, "the writers made only {} INCRs", o.known);
    assert_eq!(env.total(), o.known);
    assert_eq!(env.ledger_unknown_hits(), o.unknown);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn live_traffic_from_redis_benchmark_is_counted_exactly() {
    const CODES: u32 = 100_000;
    const INCRS: u64 = 1_000_000;
    let env = TestEnv::new(0);
    // redis-benchmark writes `__rand_int__` as 12 digits: 000000000000 … 000000099999.
    env.pg()
        .batch_execute(&format!(
            "INSERT INTO urls (short_code) SELECT lpad(g::text, 12, '0') \
             FROM generate_series(0, {}) g",
            CODES - 1
        ))
        .expect("create the benchmark's rows");
    let started = Instant::now();
    let bench = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &env.redis_port.to_string()])
        .args(["-c", "8", "-P", "8", "-q", "-n", &INCRS.to_string()])
        .args(["-r", &CODES.to_string()])
        .args(["INCR", &format!("{}__rand_int__", env.prefix)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not start redis-benchmark ({e}): install it (apt-get install redis-tools)"
            )
        });
    let waiter = std::thread::spawn(move || bench.wait_with_output());
    let mut runs = 0;
    while !waiter.is_finished() {
        env.run(&["run", "--batch-size", "2000"]).expect(0);
        runs += 1;
    }
    let out = waiter.join().expect("join").expect("redis-benchmark");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "redis-benchmark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = INCRS as f64 / took.as_secs_f64();
    eprintln!("{INCRS} INCRs in {took:?} ({rate:.0}/s) during {runs} runs");
    assert!(runs >= 3, "only {runs} runs overlapped the traffic");
    assert!(rate >= 20_000.0, "the traffic was only {rate:.0} INCR/s");
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), INCRS as i64);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn hostile_codes_are_counted_exactly_or_reported_and_the_table_stays_intact() {
    let env = TestEnv::new(2);
    // Codes that have a row: each must land on exactly its own row, bound, never spliced.
    let odd = [
        "with space",
        "quo\"te",
        "it's",
        "'; DROP TABLE urls; --",
        "emoji-😀",
        "back\\slash",
        "percent%_",
    ];
    let mut pg = env.pg();
    for code in odd {
        pg.execute("INSERT INTO urls (short_code) VALUES ($1)", &[&code])
            .expect("insert an odd code");
    }
    for (i, code) in odd.iter().enumerate() {
        env.set(code, &(i + 1).to_string());
    }
    env.set("c1", "-3");
    // Longer than varchar(255): no row can hold it, so it is an unknown code.
    let long = "x".repeat(300);
    env.set(&long, "9");
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    for (i, code) in odd.iter().enumerate() {
        assert_eq!(env.count(code), i as i64 + 1, "{code}");
    }
    assert_eq!(env.count("c1"), -3);
    assert_eq!(env.count("c2"), 0);
    let rows: i64 = pg
        .query_one("SELECT count(*) FROM urls", &[])
        .expect("count")
        .get(0);
    assert_eq!(rows, 2 + odd.len() as i64, "the table keeps every row");
    let j = out.json();
    assert_eq!(j["keys"], odd.len() + 2);
    assert_eq!(j["unknown_codes"], 1);
    assert_eq!(j["unknown_hits"], 9);
    assert_eq!(j["unknown_examples"], serde_json::json!([long]));
    assert_eq!(env.ledger_unknown_hits(), 9);
    assert!(env.keys(&env.prefix).is_empty());
}

/// The compatibility promise (docs/reliability.md, "Compatibility and upgrading"): a version recovers the journals and
/// honours the ledger rows the previous one left. tests/fixtures/journals-0.1.json is what
/// 0.1.0's binary left when killed: a batch committed and not acknowledged, and a batch
/// claimed and not applied, both in the ledger table 0.1.0 created.
#[test]
fn an_upgrade_recovers_the_journals_0_1_left() {
    let env = TestEnv::new(6);
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/journals-0.1.json"))
            .expect("the 0.1 fixture parses");
    let mut pg = env.pg();
    // 0.1.0's ledger table, as it created it.
    pg.batch_execute(
        "CREATE TABLE redis_flusher_batches (
             batch_id       text PRIMARY KEY,
             applied_at     timestamptz NOT NULL DEFAULT now(),
             keys           bigint NOT NULL,
             hits           numeric NOT NULL,
             rows_updated   bigint NOT NULL,
             unknown_keys   bigint NOT NULL,
             unknown_hits   numeric NOT NULL,
             unknown_codes  text[] NOT NULL,
             unknown_counts bigint[] NOT NULL,
             recovered      boolean NOT NULL
         );
         CREATE INDEX IF NOT EXISTS redis_flusher_batches_applied_at ON redis_flusher_batches (applied_at);",
    )
    .unwrap();
    let mut redis = env.redis();
    redis::cmd("SADD")
        .arg(env.index_key())
        .arg("-")
        .query::<()>(&mut redis)
        .unwrap();
    for which in ["committed", "claimed"] {
        let batch = &fixture[which];
        let id = batch["batch_id"].as_str().unwrap();
        for (field, value) in batch["fields"].as_object().unwrap() {
            redis::cmd("HSET")
                .arg(format!("{}{id}", env.journal_prefix))
                .arg(field)
                .arg(value.as_str().unwrap())
                .query::<()>(&mut redis)
                .unwrap();
        }
        redis::cmd("SADD")
            .arg(env.index_key())
            .arg(id)
            .query::<()>(&mut redis)
            .unwrap();
    }
    let committed = &fixture["committed"];
    let l = &committed["ledger"];
    let as_i64 = |v: &serde_json::Value| v.as_i64().unwrap();
    pg.execute(
        "INSERT INTO redis_flusher_batches (batch_id, keys, hits, rows_updated, unknown_keys, \
         unknown_hits, unknown_codes, unknown_counts, recovered) \
         VALUES ($1, $2, $3::int8::numeric, $4, $5, $6::int8::numeric, $7, $8, $9)",
        &[
            &committed["batch_id"].as_str().unwrap(),
            &as_i64(&l["keys"]),
            &as_i64(&l["hits"]),
            &as_i64(&l["rows_updated"]),
            &as_i64(&l["unknown_keys"]),
            &as_i64(&l["unknown_hits"]),
            &vec!["ghost"],
            &vec![4i64],
            &false,
        ],
    )
    .unwrap();
    for (code, hits) in committed["applied"].as_object().unwrap() {
        pg.execute(
            "UPDATE urls SET access_count = $2 WHERE short_code = $1",
            &[code, &(as_i64(hits) as i32)],
        )
        .unwrap();
    }
    // New traffic since the upgrade.
    env.set("c6", "60");

    let out = env.run(&["run", "--json"]);
    out.expect(0);
    let j = out.json();
    // Applied: the claimed batch (recovered) and the new key; the committed one only deleted.
    assert_eq!(
        (
            j["recovered_batches"].as_i64(),
            j["keys"].as_i64(),
            j["hits"].as_i64()
        ),
        (Some(1), Some(3), Some(150)),
        "{}",
        out.stdout
    );
    // The committed batch is not applied again; the claimed one is applied once.
    for (code, hits) in [
        ("c1", 10),
        ("c2", 20),
        ("c3", 30),
        ("c4", 40),
        ("c5", 50),
        ("c6", 60),
    ] {
        assert_eq!(env.count(code), hits, "{code}");
    }
    assert!(
        env.journals().is_empty(),
        "journals left: {:?}",
        env.journals()
    );
    // "-" keeps the index in existence (an index that vanished means a lost index).
    assert_eq!(env.index(), ["-"], "the index still names a batch");
    // 0.1's ledger row is kept (it carries no owner tag, so no flusher prunes it as its own).
    let kept: i64 = pg
        .query_one(
            "SELECT count(*) FROM redis_flusher_batches WHERE batch_id = $1",
            &[&committed["batch_id"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 210);
}
