//! The stress proof of exactly-once: servers that crash, hang or restart under a run, runs
//! that overlap, live traffic, and kills at random moments. Every test ends with the totals
//! compared, exactly, with what was written to Redis.
//!
//! Tests that break a server start their own; the others share this binary's private pair.
//! `REDIS_FLUSHER_KILLS=500 cargo test --test reliability random_kills` is the long mode.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{servers, start_postgres, start_redis, Outcome, TestEnv};

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

/// Waits for `child` to end, at most `limit`; returns its outcome and how long it took.
fn finish_within(child: Child, limit: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            common::signal(pid, libc::SIGKILL);
            let out = waiter.join().expect("join the waiter").expect("wait");
            panic!(
                "the run did not end within {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().expect("join the waiter").expect("wait");
    (
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        started.elapsed(),
    )
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
