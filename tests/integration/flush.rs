//! `redis-flusher run` against a private Redis and PostgreSQL: one test per rule of the flush,
//! and the exactly-once tests under single faults. Each asserts the rows and keys afterwards.

use crate::common::TestEnv;

#[test]
fn flushes_every_counter_once_and_removes_it() {
    let env = TestEnv::new(300);
    let expected = env.set_many(250, |i| i64::from(i % 7 + 1));
    let out = env.run(&["run", "--json", "--batch-size", "100", "--claim-size", "30"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(j["status"], "ok");
    assert_eq!(j["keys"], 250);
    assert_eq!(j["hits"], expected);
    assert_eq!(j["rows_updated"], 250);
    assert_eq!(j["batches"], 3);
    assert_eq!(env.total(), expected);
    assert_eq!(env.count("c1"), 2);
    assert_eq!(env.count("c6"), 7);
    assert_eq!(env.count("c251"), 0);
    assert!(env.keys(&env.prefix).is_empty());
    assert!(env.journals().is_empty());
    assert_eq!(env.ledger_rows(), 3);
    // The summary line is on stderr, at info.
    assert!(
        out.stderr.contains(&format!(
            "flushed 250 keys ({expected} hits) into 250 rows in 3 batches"
        )),
        "{}",
        out.stderr
    );

    // Nothing left: a second run does nothing and says so in its numbers.
    let again = env.run(&["run", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["keys"], 0);
    assert_eq!(env.total(), expected);
}

#[test]
fn the_journal_index_holds_only_journals_that_exist() {
    let env = TestEnv::new(100);
    env.set_many(100, |_| 1);
    env.run_with(
        &["run", "--batch-size", "30"],
        &[("REDIS_FLUSHER_FAULT", "after_claim:2")],
    )
    .expect_killed();
    let journals: Vec<String> = env
        .journals()
        .iter()
        .map(|k| k[env.journal_prefix.len()..].to_owned())
        .collect();
    assert!(!journals.is_empty());
    // Every journal is indexed (the index also holds its "-" sentinel once a run made it).
    for id in &journals {
        assert!(env.index().contains(id), "{id} not in {:?}", env.index());
    }
    env.run(&["run", "--batch-size", "30"]).expect(0);
    assert_eq!(env.total(), 100);
    assert!(env.journals().is_empty());
    assert_eq!(env.index(), vec!["-"], "only the sentinel is left");
}

#[test]
fn a_lost_journal_index_is_rebuilt_by_a_full_scan() {
    let env = TestEnv::new(50);
    let expected = env.set_many(50, i64::from);
    env.run(&["run"]).expect(0); // makes the index
    env.set_many(50, i64::from);
    env.kill_after_first_claim();
    assert_eq!(env.journals().len(), 1);
    env.lose_index();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 2 * expected);
    assert!(env.journals().is_empty());
    assert_eq!(env.index(), vec!["-"]);
}

#[test]
fn an_index_without_its_sentinel_is_not_trusted() {
    // A run that lost its lock can still claim: if the index had been lost, that claim makes
    // a new index holding only its own journal. Recovery must not take it for complete.
    let env = TestEnv::new(50);
    let expected = env.set_many(50, i64::from);
    env.kill_after_first_claim();
    assert_eq!(env.journals().len(), 1);
    env.lose_index();
    let mut redis = env.redis();
    // The zombie's journal: 5 hits of c1, claimed (`model::encode`'s packing), and its index.
    redis::cmd("HSET")
        .arg(format!("{}zombie-0", env.journal_prefix))
        .arg(&["open", "1", "c0", "2:c15\n"])
        .query::<()>(&mut redis)
        .unwrap();
    redis::cmd("SADD")
        .arg(env.index_key())
        .arg("zombie-0")
        .query::<()>(&mut redis)
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected + 5);
    assert!(env.journals().is_empty());
    assert_eq!(env.index(), vec!["-"]);
}

#[test]
fn a_values_batch_past_the_parameter_limit_is_several_statements_in_one_transaction() {
    // Postgres binds at most 65,535 parameters, so a VALUES statement holds at most 30,000
    // rows. 70,000 keys in batches of about 10,000, 20,000 and 40,000 (a run starts small):
    // the last is two statements.
    several_statements_in_one_batch("values", 70_000, 40_000, 30_000);
}

#[test]
fn an_unnest_batch_past_25_000_codes_is_several_statements_in_one_transaction() {
    // An unnest statement takes at most 25,000 rows, so that its parameters stay a few MB
    // however large a batch grows: 70,000 keys in batches of about 10,000, 20,000 and
    // 40,000; the last is two statements.
    several_statements_in_one_batch("unnest", 70_000, 40_000, 25_000);
}

/// `keys` keys in batches of up to `batch_size`, in the `statement` form whose statements
/// hold at most `per_statement` rows. Every tenth code has no row, so every statement returns
/// some codes and not others, and the unknown ones must be told apart exactly.
fn several_statements_in_one_batch(
    statement: &str,
    keys: u32,
    batch_size: u32,
    per_statement: i64,
) {
    let env = TestEnv::new(keys);
    env.pg()
        .batch_execute("DELETE FROM urls WHERE id % 10 = 0")
        .unwrap();
    let hits = |i: u32| i64::from(i % 7 + 1);
    env.set_many(keys, hits);
    let known: i64 = (1..=keys).filter(|i| i % 10 != 0).map(hits).sum();
    let unknown: i64 = (1..=keys).filter(|i| i % 10 == 0).map(hits).sum();
    let out = env.run(&[
        "run",
        "--json",
        "--statement",
        statement,
        "--batch-size",
        &batch_size.to_string(),
    ]);
    out.expect(0);
    let j = out.json();
    // The largest batch went past one statement (by the ledger, whatever SCAN's order).
    let largest: i64 = env
        .pg()
        .query_one("SELECT max(keys) FROM redis_flusher_batches", &[])
        .unwrap()
        .get(0);
    assert!(largest > per_statement, "largest batch: {largest} keys");
    assert_eq!(j["rows_updated"], keys / 10 * 9);
    assert_eq!(j["unknown_codes"], keys / 10);
    assert_eq!(j["unknown_hits"], unknown);
    assert_eq!(env.total(), known);
    assert_eq!(
        env.count(&format!("c{}", keys - 1)),
        i64::from((keys - 1) % 7 + 1)
    );
    assert_eq!(env.ledger_unknown_hits(), unknown);
    assert!(env.keys(&env.key("")).is_empty());
}

#[test]
fn the_values_form_applies_exactly_as_unnest_does() {
    let env = TestEnv::new(300);
    let mut expected = 0;
    for (round, statement) in ["values", "unnest", "values"].iter().enumerate() {
        expected += env.set_many(250, |i| i64::from(i % 5) + round as i64);
        // 250 keys in batches of 40: VALUES statements of 40 rows and one of 10.
        let out = env.run(&[
            "run",
            "--json",
            "--statement",
            statement,
            "--batch-size",
            "40",
        ]);
        out.expect(0);
        assert_eq!(out.json()["rows_updated"], 250);
        assert_eq!(out.json()["batches"], 7);
        assert_eq!(env.total(), expected, "after {statement}");
    }
    assert_eq!(env.count("c4"), 4 + 5 + 6);
}

#[test]
fn counts_add_to_what_the_table_already_holds() {
    let env = TestEnv::new(3);
    env.pg()
        .batch_execute("UPDATE urls SET access_count = 40 WHERE short_code = 'c2'")
        .unwrap();
    env.set("c2", "2");
    env.set("c3", "-3"); // negative integers are valid (a correction)
    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c2"), 42);
    assert_eq!(env.count("c3"), -3);
}

#[test]
fn nothing_to_flush_exits_zero() {
    let env = TestEnv::new(1);
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["keys"], 0);
    assert_eq!(out.json()["status"], "ok");
}

#[test]
fn a_second_run_while_one_holds_the_lock_does_nothing() {
    let env = TestEnv::new(5);
    env.run(&["run"]).expect(0); // nothing to flush; creates the tables
    env.set_many(5, |_| 1);
    // Another run, on another machine, holds the lock for the next hour.
    let name = env.config(&[]).flush.lock_name();
    env.pg()
        .execute(
            "INSERT INTO redis_flusher_leases (name, holder, host, pid, machine, since, \
             expires_at) VALUES ($1, 'run-elsewhere', 'db-host-2', 4242, 'another-machine', \
             now(), now() + interval '1 hour')",
            &[&name],
        )
        .unwrap();

    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["status"], "locked");
    assert!(
        out.stderr.contains(
            "another redis-flusher run holds the lock (a flush is in progress): run \
             run-elsewhere on db-host-2 (pid 4242) since "
        ),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 5);
    assert_eq!(env.total(), 0);

    // Its lease expires (it died without releasing it): the next run takes the lock.
    env.pg()
        .batch_execute("UPDATE redis_flusher_leases SET expires_at = now() - interval '1 s'")
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 5);
    let leases: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM redis_flusher_leases", &[])
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "a run that ends releases its lease");
}

#[test]
fn duplicate_codes_in_one_batch_are_summed() {
    let env = TestEnv::new(3);
    // A journal left by a crashed run whose two chunks both claimed c1 (the app INCRed it
    // again between the two claims). Postgres would apply only one VALUES row per code.
    let chunk0 = redis_flusher::model::encode(&[
        redis_flusher::model::Entry {
            code: "c1".into(),
            hits: 5,
        },
        redis_flusher::model::Entry {
            code: "c2".into(),
            hits: 1,
        },
    ]);
    let chunk1 = redis_flusher::model::encode(&[redis_flusher::model::Entry {
        code: "c1".into(),
        hits: 7,
    }]);
    redis::cmd("HSET")
        .arg(format!("{}manual-1", env.journal_prefix))
        .arg("c0")
        .arg(chunk0)
        .arg("c1")
        .arg(chunk1)
        .query::<()>(&mut env.redis())
        .unwrap();
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(env.count("c1"), 12);
    assert_eq!(env.count("c2"), 1);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(out.json()["keys"], 3);
    assert!(env.journals().is_empty());
}

#[test]
fn unknown_codes_are_dropped_but_recorded_in_the_ledger() {
    let env = TestEnv::new(2);
    env.set("c1", "3");
    env.set("ghost", "4");
    env.set("phantom", "6");
    env.set("evil\nINFO forged line", "1"); // a code may hold a newline: no row, so unknown
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(j["unknown_codes"], 3);
    assert_eq!(j["unknown_hits"], 11);
    assert_eq!(
        j["unknown_examples"],
        serde_json::json!(["evil\nINFO forged line", "ghost", "phantom"])
    );
    assert_eq!(j["unknown_parked_in"], serde_json::Value::Null);
    assert_eq!(env.count("c1"), 3);
    assert!(env.keys(&env.prefix).is_empty());
    assert!(!out.stderr.contains("\nINFO forged"), "{}", out.stderr);
    let row = env
        .pg()
        .query_one(
            "SELECT unknown_keys, unknown_hits::int8, unknown_codes, unknown_counts \
             FROM redis_flusher_batches",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, i64>(1), 11);
    assert_eq!(
        row.get::<_, Vec<String>>(2),
        vec!["evil\nINFO forged line", "ghost", "phantom"]
    );
    assert_eq!(row.get::<_, Vec<i64>>(3), vec![1, 4, 6]);
    assert!(
        out.stderr.contains(
            "3 unknown codes (11 hits, dropped: evil\\x0aINFO forged line, ghost, phantom)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn keep_unknown_parks_their_hits_in_a_hash() {
    let env = TestEnv::new(2);
    env.set("c1", "3");
    env.set("ghost", "4");
    let out = env.run(&["run", "--json", "--keep-unknown"]);
    out.expect(0);
    assert_eq!(out.json()["unknown_parked_in"], env.unknown_key.as_str());
    env.set("ghost", "5");
    env.run(&["run", "--keep-unknown"]).expect(0);
    let parked: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(&env.unknown_key)
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(parked, [("ghost".to_owned(), 9)].into_iter().collect());
    assert_eq!(env.count("c1"), 3);
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn bad_keys_are_left_untouched_and_reported() {
    let env = TestEnv::new(3);
    env.set("c1", "5");
    env.set("c2", "-2");
    let bad_values = [
        "abc",
        "1.5",
        "",
        " 7",
        "99999999999999999999",
        "9223372036854775808",
        "+4",
    ];
    for (i, v) in bad_values.iter().enumerate() {
        env.set(&format!("bad{i}"), v);
    }
    let mut r = env.redis();
    redis::cmd("HSET")
        .arg(env.key("ahash"))
        .arg("f")
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("RPUSH")
        .arg(env.key("alist"))
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("SADD")
        .arg(env.key("aset"))
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("XADD")
        .arg(env.key("astream"))
        .arg("*")
        .arg("f")
        .arg("1")
        .query::<()>(&mut r)
        .unwrap();
    let mut not_utf8 = env.key("x").into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe");
    redis::cmd("SET")
        .arg(&not_utf8)
        .arg("3")
        .query::<()>(&mut r)
        .unwrap();
    redis::cmd("SET")
        .arg(&env.prefix)
        .arg("3")
        .query::<()>(&mut r)
        .unwrap(); // empty code
    redis::cmd("SET")
        .arg(env.key("a\0b"))
        .arg("3")
        .query::<()>(&mut r)
        .unwrap();

    let out = env.run(&["run", "--json"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(j["keys"], 2);
    assert_eq!(j["hits"], 3);
    assert_eq!(j["bad_keys"], 14);
    assert_eq!(
        j["bad_by_reason"],
        serde_json::json!({
            "not_integer": 7, "wrong_type": 4, "code_not_utf8": 1, "code_empty": 1,
            "code_has_nul": 1
        })
    );
    assert_eq!(j["bad_examples"].as_array().unwrap().len(), 5);
    assert_eq!(env.count("c1"), 5);
    assert_eq!(env.count("c2"), -2);
    // Every bad key is still there, with its value.
    for (i, v) in bad_values.iter().enumerate() {
        assert_eq!(
            env.get(&env.key(&format!("bad{i}"))),
            Some(v.as_bytes().to_vec())
        );
    }
    let t: String = redis::cmd("TYPE")
        .arg(env.key("astream"))
        .query(&mut r)
        .unwrap();
    assert_eq!(t, "stream");
    let v: Option<String> = redis::cmd("GET").arg(&not_utf8).query(&mut r).unwrap();
    assert_eq!(v.as_deref(), Some("3"));
    assert_eq!(env.keys(&env.prefix).len(), 14);
    assert!(
        out.stderr.contains("14 bad keys left in Redis"),
        "{}",
        out.stderr
    );
    // The summary names the same five examples as the JSON (which five depends on SCAN order).
    for ex in j["bad_examples"].as_array().unwrap() {
        assert!(
            out.stderr.contains(ex["key"].as_str().unwrap()),
            "{ex}: {}",
            out.stderr
        );
    }
    // The table is intact.
    let rows: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM urls", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}

#[test]
fn an_overflowing_code_waits_in_quarantine_until_the_column_is_widened() {
    let env = TestEnv::new(5);
    env.pg()
        .batch_execute("UPDATE urls SET access_count = 2147483600 WHERE short_code = 'c1'")
        .unwrap();
    env.set_many(5, |_| 100);
    // One batch: the code that would overflow waits aside, the others go through.
    let out = env.run(&["run", "--json"]);
    out.expect(1);
    let j = out.json();
    assert_eq!(j["status"], "failed");
    assert_eq!(j["batches"], 1);
    assert_eq!(j["quarantined_codes"], 1);
    assert_eq!(j["quarantined_hits"], 100);
    assert!(out.stderr.contains("access_count"), "{}", out.stderr);
    assert!(out.stderr.contains("(integer)"), "{}", out.stderr);
    assert!(out.stderr.contains("TYPE bigint"), "{}", out.stderr);
    assert_eq!(env.count("c1"), 2147483600);
    assert_eq!(env.total(), 2147483600 + 400);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());

    // Still refused: the next run tries it again, and applies nothing twice.
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 2147483600 + 400);
    assert_eq!(env.quarantine().len(), 1);

    env.pg()
        .batch_execute("ALTER TABLE urls ALTER COLUMN access_count TYPE bigint")
        .unwrap();
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["released_from_quarantine"], 1);
    assert_eq!(env.count("c1"), 2147483700);
    assert_eq!(env.total(), 2147483700 + 400);
    assert!(env.quarantine().is_empty());
}

#[test]
fn a_row_the_app_keeps_locked_delays_only_its_batch() {
    let env = TestEnv::new(5);
    env.set_many(5, |_| 10);
    // The app holds c1 locked in a transaction that stays open during the run.
    let mut app = env.pg();
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT 1 FROM urls WHERE short_code = 'c1' FOR UPDATE", &[])
        .unwrap();
    let started = std::time::Instant::now();
    let out = env.run(&["run", "--json", "--batch-size", "1", "--lock-timeout", "1"]);
    out.expect(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(out.stderr.contains("holds locked"), "{}", out.stderr);
    assert!(out.stderr.contains("`--lock-timeout`"), "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["batches"], 4);
    assert_eq!(j["batches_failed"], 1);
    assert_eq!(env.journals().len(), 1);
    tx.rollback().unwrap();
    assert_eq!(env.count("c1"), 0);
    assert_eq!(env.total(), 40);

    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c1"), 10);
    assert_eq!(env.total(), 50);
    assert!(env.journals().is_empty());
}

#[test]
fn a_batch_past_the_statement_timeout_fails_the_run_and_is_applied_later() {
    let env = TestEnv::new(5);
    env.set_many(5, i64::from);
    // A slow server, as a trigger that sleeps 2 s in every UPDATE of the table.
    env.pg()
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
             CREATE TRIGGER slow BEFORE UPDATE ON urls FOR EACH STATEMENT EXECUTE FUNCTION slow();",
        )
        .unwrap();
    let out = env.run(&["run", "--json", "--statement-timeout", "1"]);
    out.expect(1);
    for advice in [
        "was canceled",
        "--statement-timeout (1 s)",
        "applies it whole",
    ] {
        assert!(out.stderr.contains(advice), "{advice}: {}", out.stderr);
    }
    assert_eq!(out.json()["pending_journals"], 1);
    assert_eq!(env.total(), 0);
    assert_eq!(env.journals().len(), 1);

    let out = env.run(&["run", "--json", "--statement-timeout", "5"]);
    out.expect(0);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), 15);
    assert!(env.journals().is_empty());
}

#[test]
fn a_missing_table_fails_before_claiming_anything() {
    let env = TestEnv::new(2);
    env.set_many(2, |_| 4);
    env.pg()
        .batch_execute("ALTER TABLE urls RENAME TO urls_old")
        .unwrap();
    let out = env.run(&["run"]);
    out.expect(2);
    assert!(
        out.stderr.contains("table `urls` does not exist"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`DB_NAME`"), "{}", out.stderr);
    assert_eq!(env.keys(&env.prefix).len(), 2);
    assert!(env.journals().is_empty());
}

#[test]
fn a_journal_whose_table_vanished_waits_for_it_and_is_applied_once() {
    let env = TestEnv::new(4);
    let expected = env.set_many(4, i64::from);
    env.kill_after_first_claim();
    assert_eq!(env.journals().len(), 1);
    // The table goes away between the crash and the next run (a migration, say).
    env.pg()
        .batch_execute("ALTER TABLE urls RENAME TO urls_old")
        .unwrap();
    // A person must put it back first: a setup error, and nothing claimed.
    env.run(&["run"]).expect(2);
    assert_eq!(env.journals().len(), 1);
    env.pg()
        .batch_execute("ALTER TABLE urls_old RENAME TO urls")
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
}

/// Kills the run at `point`, checks that the hits are neither in the table nor lost, and
/// that one clean run then makes the totals exact.
fn killed_at(point: &str, rows_before_clean_run: i64) {
    let env = TestEnv::new(60);
    let expected = env.set_many(50, |i| i64::from(i) * 3);
    // On one connection: the ledger rows at the kill are known (the suites in
    // tests/reliability.rs kill runs on four).
    env.run_with(
        &[
            "run",
            "--batch-size",
            "20",
            "--claim-size",
            "10",
            "--pg-connections",
            "1",
        ],
        &[("REDIS_FLUSHER_FAULT", point)],
    )
    .expect_killed();
    // One batch being applied, one waiting for it, one being claimed: at most three.
    let left = env.journals().len();
    assert!((1..=3).contains(&left), "{left} journals left at {point}");
    assert_eq!(
        env.ledger_rows(),
        rows_before_clean_run,
        "ledger rows at {point}"
    );
    let out = env.run(&["run", "--json", "--batch-size", "20", "--claim-size", "10"]);
    out.expect(0);
    assert_eq!(env.total(), expected, "total after a kill at {point}");
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
    assert_eq!(env.count("c50"), 150);
}

#[test]
fn killed_after_a_claim_loses_nothing() {
    killed_at("after_claim", 0);
}

#[test]
fn killed_after_the_update_before_commit_loses_nothing() {
    killed_at("before_commit", 0);
}

#[test]
fn killed_after_commit_before_the_journal_delete_counts_nothing_twice() {
    killed_at("after_commit", 1);
}

#[test]
fn killed_after_the_second_claim_of_a_batch_loses_nothing() {
    killed_at("after_claim:2", 0);
}

#[test]
fn killed_during_recovery_counts_nothing_twice() {
    let env = TestEnv::new(30);
    let expected = env.set_many(30, i64::from);
    env.kill_after_first_claim();
    env.run_with(
        &["run"],
        &[("REDIS_FLUSHER_FAULT", "recovery_after_commit")],
    )
    .expect_killed();
    assert_eq!(env.ledger_rows(), 1);
    assert_eq!(env.journals().len(), 1);
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
}

#[test]
fn killed_with_unknown_codes_after_commit_parks_them_once() {
    let env = TestEnv::new(2);
    env.set("c1", "1");
    env.set("ghost", "8");
    env.run_with(
        &["run", "--keep-unknown"],
        &[("REDIS_FLUSHER_FAULT", "after_commit")],
    )
    .expect_killed();
    env.run(&["run", "--keep-unknown"]).expect(0);
    let parked: Option<i64> = redis::cmd("HGET")
        .arg(&env.unknown_key)
        .arg("ghost")
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(parked, Some(8));
    assert_eq!(env.count("c1"), 1);
}

#[test]
fn two_runs_at_once_count_everything_exactly_once() {
    let env = TestEnv::new(3000);
    let expected = env.set_many(3000, |i| i64::from(i % 10 + 1));
    let mut a = env.cmd();
    a.args(["run", "--batch-size", "200"]);
    let mut b = env.cmd();
    b.args(["run", "--batch-size", "200"]);
    let ha = std::thread::spawn(move || a.output().unwrap());
    let hb = std::thread::spawn(move || b.output().unwrap());
    let (oa, ob) = (ha.join().unwrap(), hb.join().unwrap());
    assert_eq!(
        oa.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert_eq!(
        ob.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
    // Whichever lost the lock race did nothing; anything left is flushed by one more run.
    env.wait_for_unlock();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn the_app_incrementing_during_runs_loses_and_doubles_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let env = TestEnv::new(200);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4u64 {
        let stop = stop.clone();
        let mut con = env.redis();
        let prefix = env.prefix.clone();
        writers.push(std::thread::spawn(move || {
            // A small LCG: reproducible codes without a rand crate.
            let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t + 1);
            let (mut known, mut unknown) = (0i64, 0i64);
            while !stop.load(Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (x >> 33) % 220 + 1; // c201..c220 have no row
                redis::cmd("INCR")
                    .arg(format!("{prefix}c{n}"))
                    .query::<i64>(&mut con)
                    .unwrap();
                if n <= 200 {
                    known += 1;
                } else {
                    unknown += 1;
                }
            }
            (known, unknown)
        }));
    }
    for _ in 0..6 {
        env.run(&["run", "--batch-size", "50", "--claim-size", "20"])
            .expect(0);
    }
    stop.store(true, Ordering::Relaxed);
    let (mut known, mut unknown) = (0, 0);
    for w in writers {
        let (k, u) = w.join().unwrap();
        known += k;
        unknown += u;
    }
    env.run(&["run"]).expect(0);
    assert!(known > 1000, "the writers made only {known} INCRs");
    assert_eq!(env.total(), known);
    let dropped: i64 = env
        .pg()
        .query_one(
            "SELECT coalesce(sum(unknown_hits), 0)::int8 FROM redis_flusher_batches",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dropped, unknown);
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn sigterm_applies_what_was_claimed_and_stops_within_seconds() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new(40_000);
    let expected = env.set_many(40_000, |i| i64::from(i % 3 + 1));
    let mut cmd = env.cmd();
    cmd.args(["run", "--batch-size", "500", "--claim-size", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Signal once the first batch is committed, so that the run is mid-way.
    env.wait_for_ledger_rows(1);
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child's pid with a constant signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to stop: {stderr}"
    );
    // A stop that was asked for is not a failure: exit 0 (Kubernetes, systemd).
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM/SIGINT"), "{stderr}");
    assert!(
        env.journals().is_empty(),
        "the claimed batches were applied, none left half-done"
    );
    let applied = env.total();
    assert!(
        applied > 0 && applied < expected,
        "applied {applied} of {expected}"
    );
    env.wait_for_unlock();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.keys(&env.prefix).is_empty());
}

/// Which server processes ran the UPDATEs of a run with `--pg-connections n`: a trigger on
/// the table notes its backend's pid and holds each batch 0.7 s, so that batches claimed
/// meanwhile go to the other connections (which have a few seconds to open).
fn backends_that_applied(connections: &str) -> i64 {
    let env = TestEnv::new(90);
    let expected = env.set_many(90, |i| i64::from(i % 3 + 1));
    env.pg()
        .batch_execute(
            "CREATE TABLE seen (pid int);
             CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO seen VALUES (pg_backend_pid()); PERFORM pg_sleep(0.7);
                RETURN NULL; END $$;
             CREATE TRIGGER note AFTER UPDATE ON urls FOR EACH STATEMENT EXECUTE FUNCTION note();",
        )
        .unwrap();
    let out = env.run(&[
        "run",
        "--json",
        "--batch-size",
        "10",
        "--claim-size",
        "10",
        "--pg-connections",
        connections,
    ]);
    out.expect(0);
    // Nine batches of ten, or more when SCAN returned a key twice (it may while Redis
    // rehashes) and a chunk held fewer than ten.
    let batches = out.json()["batches"].as_i64().expect("batches");
    assert!((9..=12).contains(&batches), "{batches} batches");
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
    assert_eq!(env.ledger_rows(), batches);
    env.pg()
        .query_one("SELECT count(DISTINCT pid) FROM seen", &[])
        .unwrap()
        .get(0)
}

#[test]
fn batches_are_applied_on_as_many_connections_as_asked() {
    assert_eq!(backends_that_applied("3"), 3);
    assert_eq!(backends_that_applied("1"), 1);
}

#[test]
fn connections_postgres_refuses_leave_the_run_to_the_ones_it_has() {
    let env = TestEnv::new(60);
    env.run(&["run"]).expect(0); // the bookkeeping tables, made by the superuser
    let expected = env.set_many(60, |i| i64::from(i % 5 + 1));
    // A role that may hold two connections: the run's first, and one more (an applier's;
    // the lock's renewal connects later, after a quarter of --lock-ttl).
    let role = format!("flusher_two_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN CONNECTION LIMIT 2;
             GRANT SELECT, UPDATE ON urls TO {role};
             GRANT SELECT, INSERT, DELETE ON redis_flusher_batches, redis_flusher_runs TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON redis_flusher_leases,
                   redis_flusher_quarantine TO {role};"
        ))
        .unwrap();
    let out = env.run_with(
        &[
            "run",
            "--json",
            "--batch-size",
            "10",
            "--pg-connections",
            "4",
        ],
        &[("DB_USER", &role)],
    );
    out.expect(0);
    // Two of them, or three if the lock's renewal took the second connection first.
    let refused = out
        .stderr
        .matches("could not open one more connection to apply batches")
        .count();
    assert!((2..=3).contains(&refused), "{}", out.stderr);
    assert_eq!(out.json()["batches"], 6);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}
