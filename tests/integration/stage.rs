//! A backlog's transactions that gather several claimed batches through Postgres' stage
//! (`src/postgres/stage.rs`). A real backlog is millions of keys; these tests make the same
//! shape from a few hundred with `REDIS_FLUSHER_TEST_BATCH_KEYS` (debug builds only), which
//! caps a claimed batch below `--batch-size`.

use crate::common::TestEnv;

/// Claimed batches of this many keys, gathered into transactions of `--batch-size`.
const BATCH_KEYS: (&str, &str) = ("REDIS_FLUSHER_TEST_BATCH_KEYS", "25");

fn gathered_batches_flush_exactly(connections: &str) {
    let env = TestEnv::new(1000);
    let known = env.set_many(900, |i| i64::from(i % 9 + 1));
    let unknown: Vec<(String, i64)> = (1..=30).map(|i| (format!("u{i}"), 2)).collect();
    env.incr_many(unknown.iter().map(|(c, n)| (c.as_str(), *n)));
    let out = env.run_with(
        &[
            "run",
            "--json",
            "--batch-size",
            "200",
            "--keep-unknown",
            "--pg-connections",
            connections,
        ],
        &[BATCH_KEYS],
    );
    out.expect(0);
    let j = out.json();
    assert_eq!(env.total(), known);
    assert_eq!(j["keys"], 930);
    assert_eq!(j["rows_updated"], 900);
    assert_eq!(j["unknown_codes"], 30);
    assert_eq!(env.ledger_unknown_hits(), 60);
    let parked: Vec<i64> = redis::cmd("HVALS")
        .arg(&env.unknown_key)
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(parked.iter().sum::<i64>(), 60, "unknown hits parked");
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
    let (rows, transactions) = env.ledger_rows_and_transactions();
    assert_eq!(rows, 38, "930 keys in batches of at most 25");
    assert!(
        transactions <= 10,
        "{rows} batches in {transactions} transactions: they were not gathered"
    );
    let ledger_rows: i64 = env
        .pg()
        .query_one(
            "SELECT sum(rows_updated)::int8 FROM redis_flusher_batches",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ledger_rows, 900, "the ledger's rows, batch by batch");
}

#[test]
fn gathered_batches_flush_exactly_on_one_connection() {
    gathered_batches_flush_exactly("1");
}

#[test]
fn gathered_batches_flush_exactly_on_three_connections() {
    gathered_batches_flush_exactly("3");
}

/// A journal a killed run left is applied on its own by the next run, whose new keys are
/// gathered: a code in both gets both's hits.
#[test]
fn a_killed_runs_journal_and_the_next_runs_gathered_batches_both_land() {
    let env = TestEnv::new(100);
    let first = env.set_many(60, |_| 1);
    env.run_with(&["run"], &[("REDIS_FLUSHER_FAULT", "after_claim")])
        .expect_killed();
    let second = env.set_many(60, |_| 2);
    let out = env.run_with(&["run", "--json", "--batch-size", "100"], &[BATCH_KEYS]);
    out.expect(0);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), first + second);
    assert_eq!(env.count("c5"), 3);
    assert!(env.journals().is_empty());
    // The journal's batch, then 60 keys in batches of 25 gathered (25 + 25 + 10).
    assert_eq!(env.ledger_rows_and_transactions(), (4, 2));
}

#[test]
fn a_row_a_trigger_refuses_in_a_gathered_transaction_waits_alone() {
    let env = TestEnv::new(300);
    env.refuse_updates_of("c7", "c7 is frozen");
    let expected = env.set_many(300, |i| i64::from(i % 4 + 1));
    env.set("u1", "5"); // unknown, beside the refused one
    let out = env.run_with(&["run", "--json", "--batch-size", "150"], &[BATCH_KEYS]);
    out.expect(1);
    let j = out.json();
    assert_eq!(j["quarantined_codes"], 1);
    assert_eq!(j["unknown_codes"], 1);
    let c7 = 7 % 4 + 1;
    assert_eq!(env.total(), expected - c7, "every other code applied once");
    assert_eq!(env.count("c7"), 0);
    assert_eq!(env.ledger_unknown_hits(), 5);
    let q = env.quarantine();
    assert_eq!((q.len(), q[0].0.as_str(), q[0].1), (1, "c7", c7));
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
    let (rows, transactions) = env.ledger_rows_and_transactions();
    assert!(
        transactions < rows,
        "{rows} batches, {transactions} transactions"
    );

    env.pg()
        .batch_execute("DROP TRIGGER refuse_c7 ON urls")
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
}

#[test]
fn a_code_that_matches_two_rows_in_a_gathered_transaction_is_not_counted_twice() {
    let env = TestEnv::new(0);
    env.pg()
        .batch_execute(
            "CREATE TABLE links (code text, hits bigint NOT NULL DEFAULT 0);
             INSERT INTO links (code) SELECT 'c' || g FROM generate_series(1, 200) g;
             INSERT INTO links (code) VALUES ('c50');",
        )
        .unwrap();
    let expected = env.set_many(200, |_| 10);
    let out = env.run_with(
        &[
            "run",
            "--json",
            "--batch-size",
            "100",
            "--table",
            "links",
            "--code-column",
            "code",
            "--count-column",
            "hits",
        ],
        &[BATCH_KEYS],
    );
    out.expect(1);
    let sum: i64 = env
        .pg()
        .query_one("SELECT sum(hits)::int8 FROM links", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        sum,
        expected - 10,
        "c50's hits added to neither of its rows"
    );
    assert!(
        out.stderr.contains("matches 2 rows of `links`"),
        "{}",
        out.stderr
    );
    assert_eq!(env.quarantine()[0].0, "c50");
    assert!(env.journals().is_empty());
}

#[test]
fn a_code_the_encoding_cannot_hold_in_a_gathered_transaction_is_quarantined() {
    let env = TestEnv::with_encoding(100, "LATIN1");
    let expected = env.set_many(100, |_| 1);
    env.set("😀", "4");
    let out = env.run_with(&["run", "--json", "--batch-size", "100"], &[BATCH_KEYS]);
    out.expect(1);
    assert_eq!(out.json()["quarantined_codes"], 1);
    assert_eq!(env.total(), expected);
    let q = env.quarantine();
    assert_eq!((q[0].0.as_str(), q[0].1), ("😀", 4));
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
    let (rows, transactions) = env.ledger_rows_and_transactions();
    assert!(
        transactions < rows,
        "{rows} batches, {transactions} transactions"
    );
}

/// A row the app keeps locked past `--lock-timeout`: the transaction that gathers it is
/// refused whole, all its batches wait in their journals, the run goes on with the others,
/// and the next run applies them.
#[test]
fn a_locked_row_refuses_a_gathered_transaction_and_its_batches_wait() {
    let env = TestEnv::new(400);
    let expected = env.set_many(400, |i| i64::from(i % 3 + 1));
    let mut app = env.pg();
    let mut lock = app.transaction().unwrap();
    lock.execute("SELECT 1 FROM urls WHERE short_code = 'c5' FOR UPDATE", &[])
        .unwrap();
    let out = env.run_with(
        &[
            "run",
            "--json",
            "--batch-size",
            "100",
            "--lock-timeout",
            "1",
        ],
        &[BATCH_KEYS],
    );
    out.expect(1);
    let j = out.json();
    assert!(
        out.stderr.contains("they stay in their journals"),
        "{}",
        out.stderr
    );
    let waiting = j["pending_journals"].as_u64().unwrap();
    assert!(waiting >= 2, "a gathered transaction's batches: {waiting}");
    assert_eq!(j["batches_failed"], waiting);
    assert_eq!(env.journals().len() as u64, waiting);
    assert!(env.total() > 0, "the other transactions were applied");
    lock.rollback().unwrap();

    env.run_with(&["run"], &[BATCH_KEYS]).expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
}

/// A DBA may revoke the right to create temporary tables: each batch is then its own
/// transaction, and the flush is as exact.
#[test]
fn without_temporary_tables_each_batch_is_its_own_transaction() {
    let env = TestEnv::new(300);
    env.run(&["run"]).expect(0); // creates the bookkeeping tables
    let role = format!("flusher_no_temp_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;
             CREATE ROLE {role} LOGIN;
             GRANT SELECT, UPDATE ON urls TO {role};
             GRANT SELECT, INSERT, DELETE ON redis_flusher_batches, redis_flusher_runs TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON redis_flusher_leases,
                   redis_flusher_quarantine TO {role};",
            db = env.db
        ))
        .unwrap();
    let expected = env.set_many(300, |i| i64::from(i % 3 + 1));
    let out = env.run_with(
        &["run", "--batch-size", "100"],
        &[BATCH_KEYS, ("DB_USER", &role)],
    );
    out.expect(0);
    assert_eq!(env.total(), expected);
    let (rows, transactions) = env.ledger_rows_and_transactions();
    assert_eq!((rows, transactions), (12, 12));
    let check = env.run_with(&["check"], &[("DB_USER", &role)]);
    check.expect(0);
    assert!(
        check.stdout.contains("lacks TEMPORARY on the database"),
        "{}",
        check.stdout
    );
    assert!(env.journals().is_empty());
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

/// A code two batches of one transaction hold (SCAN may list a key again once it was claimed
/// and INCRed anew): one statement of the merged UPDATE meets it twice and takes one batch's
/// hits only, so the transaction applies its batches one by one instead, and the row gets
/// both. Driven through the library: a run cannot be made to claim one key twice at will.
#[test]
fn a_code_two_gathered_batches_hold_gets_both_batches_hits() {
    use redis_flusher::model::Batch;
    use redis_flusher::postgres::{ApplyTo, Session};
    let env = TestEnv::new(100);
    env.run(&["run"]).expect(0); // creates the bookkeeping tables
    let cfg = env.config(&[]);
    let mut pg = Session::connect(&cfg.pg).unwrap();
    let facts = pg.check_target(&cfg.flush.target).unwrap();
    let to = ApplyTo {
        target: &cfg.flush.target,
        facts: &facts,
        ledger: &cfg.flush.ledger.ledger_table,
        quarantine: &cfg.flush.ledger.quarantine_table,
        owner: "test",
    };
    let batch = |id: &str, codes: &[(&str, i64)]| {
        let mut b = Batch::new(id.to_owned());
        for (code, hits) in codes {
            b.hits.push(code, *hits).unwrap();
            b.keys += 1;
        }
        b.finish().unwrap();
        b
    };
    let first = batch("t-1", &[("c4", 1), ("c5", 3)]);
    let mut rest = vec![batch("t-2", &[("c5", 7), ("c6", 1), ("nope", 2)])];
    let mut taken = 0;
    let done = pg
        .write_gathered(&to, first, || rest.pop(), &mut taken)
        .unwrap();
    assert_eq!(taken, 2);
    assert_eq!(env.count("c5"), 10, "both batches' hits");
    assert_eq!(env.total(), 12);
    let unknown: Vec<_> = done
        .iter()
        .map(|(h, a)| (h.id.as_str(), a.unknown.clone()))
        .collect();
    assert_eq!(
        unknown,
        [("t-1", vec![]), ("t-2", vec![("nope".to_owned(), 2)])]
    );
    assert_eq!(env.ledger_unknown_hits(), 2);
}
