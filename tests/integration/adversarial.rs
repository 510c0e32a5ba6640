//! Exactly once beyond our own assumptions: shared servers, odd tables, poisoned rows, hostile
//! settings. Each test is a case found by using the flusher the way real installs and hostile
//! operators do.

use crate::common::TestEnv;

/// Creates a second target table `clicks` (codes `c1..c<rows>`) in `env`'s database.
fn clicks_table(env: &TestEnv, rows: u32) {
    env.pg()
        .batch_execute(&format!(
            "CREATE TABLE clicks (code text PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
             INSERT INTO clicks (code) SELECT 'c' || g FROM generate_series(1, {rows}) g;"
        ))
        .expect("create clicks");
}

fn clicks_total(env: &TestEnv) -> i64 {
    env.pg()
        .query_one("SELECT coalesce(sum(n), 0)::int8 FROM clicks", &[])
        .unwrap()
        .get(0)
}

#[test]
fn two_apps_sharing_a_redis_and_a_journal_prefix_recover_only_their_own_journals() {
    let env = TestEnv::new(10);
    clicks_table(&env, 10);
    let tag = env.prefix.trim_end_matches("hits:");
    let b_pattern = format!("{tag}clicks:*");
    let app_b = [
        "run",
        "--pattern",
        &b_pattern,
        "--table",
        "clicks",
        "--code-column",
        "code",
        "--count-column",
        "n",
        "--json",
    ];
    // App A's batch waits in its journal (its run was killed after claiming).
    env.set_many(10, |_| 10);
    env.kill_after_first_claim();
    assert_eq!(env.journals().len(), 1);

    // App B, with the same journal prefix, runs: A's journal is not its to recover.
    let out = env.run(&app_b);
    out.expect(0);
    assert_eq!(clicks_total(&env), 0, "A's hits went to B's table");
    assert_eq!(env.journals().len(), 1, "B touched A's journal");
    assert_eq!(out.json()["other_targets_journals"], 1);
    assert!(
        out.stderr.contains("belongs to another target")
            && out.stderr.contains(&format!("pattern {}*", env.prefix))
            && out.stderr.contains("table urls"),
        "{}",
        out.stderr
    );

    // A recovers its own.
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 100);
    assert_eq!(clicks_total(&env), 0);
    assert!(env.journals().is_empty());
}

#[test]
fn a_flusher_never_prunes_a_ledger_row_another_flusher_still_needs() {
    let env = TestEnv::new(5);
    env.set("c1", "20");
    // Flusher A commits and dies before deleting its journal: the ledger row guards it.
    env.run_with(&["run"], &[("REDIS_FLUSHER_FAULT", "after_commit")])
        .expect_killed();
    assert_eq!(env.total(), 20);
    assert_eq!(env.journals().len(), 1);
    env.pg()
        .batch_execute("UPDATE redis_flusher_batches SET applied_at = now() - interval '40 days'")
        .unwrap();

    // Flusher B shares the ledger table, not the journal prefix, and prunes after 30 days.
    let tag = env.prefix.trim_end_matches("hits:");
    let (b_pattern, b_journals) = (format!("{tag}other:*"), format!("{tag}journal_b:"));
    env.run(&[
        "run",
        "--pattern",
        &b_pattern,
        "--journal-prefix",
        &b_journals,
        "--ledger-days",
        "30",
    ])
    .expect(0);
    assert_eq!(
        env.ledger_rows(),
        1,
        "B pruned the row that guards A's journal"
    );

    // A recovers its journal: already applied, so only deleted.
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 20, "a batch applied twice");
    assert!(env.journals().is_empty());

    // A's own old rows are A's to prune, once its journals are done.
    env.run(&["run", "--ledger-days", "30"]).expect(0);
    assert_eq!(env.ledger_rows(), 0);
}

#[test]
fn a_row_a_trigger_refuses_is_quarantined_and_the_rest_flushes() {
    let env = TestEnv::new(50);
    env.refuse_updates_of("c7", "c7 is frozen");
    env.set_many(50, |_| 2);
    let out = env.run(&["run", "--json"]);
    out.expect(1);
    let j = out.json();
    assert_eq!(j["quarantined_codes"], 1);
    assert_eq!(j["quarantined_hits"], 2);
    assert!(out.stderr.contains("c7 is frozen"), "{}", out.stderr);
    assert_eq!(env.total(), 98, "every other code applied");
    assert_eq!(env.count("c7"), 0);
    let q = env.quarantine();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].0.as_str(), q[0].1), ("c7", 2));
    assert!(q[0].2.contains("c7 is frozen"), "{q:?}");
    assert!(
        env.journals().is_empty(),
        "the batch's journal is done with"
    );
    assert!(env.keys(&env.prefix).is_empty());

    // Later runs flush everything else, and do not stall on c7. More hits for a code that
    // already waits there go there too, without failing the run again.
    env.set_many(10, |_| 1);
    env.set("c7", "3");
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert!(
        out.stderr.contains("(0 of them new there)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["quarantine_waiting"], 1);
    assert_eq!(env.total(), 98 + 9);
    assert_eq!(
        env.quarantine()[0].1,
        5,
        "c7's new hits join its quarantine"
    );
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 107, "nothing applied twice");

    // Once the trigger lets it through, the next run applies what waited.
    env.pg()
        .batch_execute("DROP TRIGGER refuse_c7 ON urls")
        .unwrap();
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["released_from_quarantine"], 1);
    assert_eq!(env.count("c7"), 5);
    assert_eq!(env.total(), 112);
    assert!(env.quarantine().is_empty());
}

#[test]
fn a_check_constraint_refuses_one_row_and_only_that_row_waits() {
    let env = TestEnv::new(2000);
    env.pg()
        .batch_execute(
            "UPDATE urls SET access_count = 990 WHERE short_code = 'c1234';
             ALTER TABLE urls ADD CONSTRAINT capped CHECK (access_count < 1000)",
        )
        .unwrap();
    let expected = env.set_many(2000, |i| i64::from(i % 7 + 20));
    let out = env.run(&["run", "--json"]);
    out.expect(1);
    assert_eq!(out.json()["quarantined_codes"], 1);
    assert!(out.stderr.contains("capped"), "{}", out.stderr);
    let c1234 = i64::from(1234 % 7 + 20);
    assert_eq!(env.total(), 990 + expected - c1234);
    assert_eq!(env.quarantine()[0].1, c1234);
}

#[test]
fn a_code_the_database_encoding_cannot_hold_is_quarantined() {
    let env = TestEnv::with_encoding(5, "LATIN1");
    env.set_many(5, |_| 1);
    env.set("😀", "4");
    env.set("é", "2"); // in LATIN1, and without a row: unknown, not poisoned
    let out = env.run(&["run", "--json"]);
    out.expect(1);
    let j = out.json();
    assert_eq!(j["quarantined_codes"], 1);
    assert_eq!(j["unknown_codes"], 1);
    assert_eq!(env.total(), 5);
    let q = env.quarantine();
    assert_eq!((q[0].0.as_str(), q[0].1), ("😀", 4));
    assert!(q[0].2.contains("LATIN1"), "{q:?}");
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn a_code_that_matches_two_rows_is_not_counted_twice() {
    let env = TestEnv::new(0);
    env.pg()
        .batch_execute(
            "CREATE TABLE links (code text, hits bigint NOT NULL DEFAULT 0);
             INSERT INTO links (code) VALUES ('a'), ('b'), ('b'), ('c');",
        )
        .unwrap();
    env.set("a", "10");
    env.set("b", "10");
    env.set("c", "10");
    let args = [
        "run",
        "--json",
        "--table",
        "links",
        "--code-column",
        "code",
        "--count-column",
        "hits",
    ];
    let out = env.run(&args);
    out.expect(1);
    let sum: i64 = env
        .pg()
        .query_one("SELECT sum(hits)::int8 FROM links", &[])
        .unwrap()
        .get(0);
    assert_eq!(sum, 20, "b's hits added to both of its rows");
    assert!(
        out.stderr.contains("matches 2 rows of `links`")
            && out.stderr.contains("CREATE UNIQUE INDEX"),
        "{}",
        out.stderr
    );
    assert_eq!(env.quarantine()[0].0, "b");
}

#[test]
fn kills_around_a_batch_with_a_refused_row_lose_and_double_nothing() {
    let env = TestEnv::new(300);
    env.refuse_updates_of("c9", "no");
    let mut expected = 0;
    for point in ["before_commit", "after_commit", "quarantine_before_commit"] {
        expected += env.set_many(300, |i| i64::from(i % 5 + 1));
        env.run_with(&["run"], &[("REDIS_FLUSHER_FAULT", point)])
            .expect_killed();
        // Whatever the kill left, a run finishes it, c9 aside in the quarantine.
        env.run(&["run"]);
        let waiting: i64 = env.quarantine().iter().map(|q| q.1).sum();
        assert_eq!(env.total() + waiting, expected, "after a kill at {point}");
        assert!(env.journals().is_empty(), "after a kill at {point}");
    }
    env.pg()
        .batch_execute("DROP TRIGGER refuse_c9 ON urls")
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.quarantine().is_empty());
}

#[test]
fn the_readme_acl_with_a_custom_journal_prefix_is_enough() {
    // docs/deployment.md, Least privilege: replace `~redis_flusher:*` with the new journal prefix. Without
    // `--keep-unknown`, nothing else: the unknown-codes hash is not this user's.
    let env = TestEnv::new(30);
    let user = format!("flusher_{}", env.n);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(env.acl_with_keys(&user, "acl-pw", &[]))
        .query::<()>(&mut env.redis())
        .unwrap();
    let expected = env.set_many(30, |i| i64::from(i % 3 + 1));
    env.set("ghost", "6");
    let creds = [
        ("REDIS_USERNAME", user.as_str()),
        ("REDIS_PASSWORD", "acl-pw"),
    ];
    let mut killing = creds.to_vec();
    killing.push(("REDIS_FLUSHER_FAULT", "after_claim"));
    env.run_with(&["run", "--batch-size", "10"], &killing)
        .expect_killed();
    let out = env.run_with(&["run", "--batch-size", "10", "--json"], &creds);
    out.expect(0);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), expected);
    assert_eq!(env.ledger_unknown_hits(), 6);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn unknown_hits_redis_has_no_memory_to_park_are_parked_by_the_next_run() {
    let redis = crate::common::start_redis(&[]);
    let env = TestEnv::on(redis.port, crate::common::servers().pg_port, 10);
    // A first run makes the journal index, which an out-of-memory Redis would refuse.
    env.run(&["run"]).expect(0);
    let expected = env.set_many(10, |_| 2);
    env.set("ghost", "5");
    env.set("phantom", "7");
    let mut con = env.redis();
    let config = |con: &mut redis::Connection, k: &str, v: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query::<()>(con)
            .unwrap()
    };
    config(&mut con, "maxmemory-policy", "noeviction");
    config(&mut con, "maxmemory", "1");
    let out = env.run(&["run", "--keep-unknown", "--json"]);
    out.expect(1);
    let j = out.json();
    assert_eq!(env.total(), expected, "the known codes are applied");
    assert_eq!(j["unknown_codes"], 2);
    assert_eq!(j["unknown_parked"], 0);
    assert_eq!(j["pending_journals"], 1);
    assert!(
        out.stderr.contains("out of memory") && out.stderr.contains("the next run parks them"),
        "{}",
        out.stderr
    );
    let parked: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(&env.unknown_key)
        .query(&mut con)
        .unwrap();
    assert!(
        parked.is_empty(),
        "the summary must not claim what is not there"
    );
    assert_eq!(
        env.journals().len(),
        1,
        "the journal keeps the hits to park"
    );

    config(&mut con, "maxmemory", "0");
    let out = env.run(&["run", "--keep-unknown", "--json"]);
    out.expect(0);
    let mut parked: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(&env.unknown_key)
        .query(&mut con)
        .unwrap();
    parked.sort();
    assert_eq!(parked, [("ghost".into(), 5), ("phantom".into(), 7)]);
    assert_eq!(env.total(), expected, "nothing applied twice");
    assert!(env.journals().is_empty());
}

#[test]
fn unknown_hits_whose_hash_field_would_overflow_are_said_to_be_in_the_ledger_only() {
    let env = TestEnv::new(3);
    redis::cmd("HSET")
        .arg(&env.unknown_key)
        .arg("ghost")
        .arg(i64::MAX)
        .query::<()>(&mut env.redis())
        .unwrap();
    env.set("ghost", "5");
    env.set("phantom", "7");
    env.set("c1", "1");
    let out = env.run(&["run", "--keep-unknown", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["unknown_parked"], 1);
    assert!(
        out.stderr
            .contains("the hits of 1 unknown codes could not be parked")
            && out.stderr.contains("overflow")
            && out.stderr.contains("recorded in the ledger only: ghost")
            && out.stderr.contains("1 kept in"),
        "{}",
        out.stderr
    );
    let phantom: Option<i64> = redis::cmd("HGET")
        .arg(&env.unknown_key)
        .arg("phantom")
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(phantom, Some(7));
    assert_eq!(env.ledger_unknown_hits(), 12);
}

/// `check --json`'s failures, as (code, message).
fn check_failures(out: &crate::common::Outcome) -> Vec<(String, String)> {
    out.json()["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["level"] == "fail")
        .map(|f| {
            (
                f["code"].as_str().unwrap_or_default().to_owned(),
                f["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_target_no_flush_could_use_is_refused_before_anything_is_claimed_and_check_says_why() {
    let env = TestEnv::new(3);
    let role = format!("flusher_ro_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE TABLE texty (code text PRIMARY KEY, n text NOT NULL DEFAULT '0');
             INSERT INTO texty (code) VALUES ('c1'), ('c2'), ('c3');
             CREATE TABLE numbered (code int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
             CREATE TABLE owners (code text PRIMARY KEY, owner text);
             INSERT INTO owners VALUES ('c1', 'x'), ('c2', 'y'), ('c3', 'z');
             CREATE VIEW joined AS SELECT u.short_code AS code, u.access_count AS n, o.owner
               FROM urls u JOIN owners o ON o.code = u.short_code;
             CREATE ROLE {role} LOGIN;
             GRANT SELECT ON urls TO {role};
             GRANT ALL ON SCHEMA public TO {role};"
        ))
        .unwrap();
    env.set_many(3, |_| 1);
    /// (what, the run's arguments, its environment, what the refusal says, `check`'s code for
    /// it)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "a text count column",
            vec![
                "--table",
                "texty",
                "--code-column",
                "code",
                "--count-column",
                "n",
            ],
            vec![],
            "`texty.n` is text",
            "column.count_type",
        ),
        (
            "an integer code column",
            vec![
                "--table",
                "numbered",
                "--code-column",
                "code",
                "--count-column",
                "n",
            ],
            vec![],
            "`numbered.code` is integer",
            "column.code_type",
        ),
        (
            "a join view",
            vec![
                "--table",
                "joined",
                "--code-column",
                "code",
                "--count-column",
                "n",
            ],
            vec![],
            "`joined` is a view Postgres cannot update",
            "table.updatable",
        ),
        (
            "a role without UPDATE",
            vec![],
            vec![("DB_USER", role.as_str())],
            "this role lacks UPDATE on `urls`",
            "role.privileges",
        ),
    ];
    for (case, args, vars, why, code) in cases {
        let run: Vec<&str> = ["run"].into_iter().chain(args.iter().copied()).collect();
        let out = env.run_with(&run, &vars);
        out.expect(2);
        assert!(out.stderr.contains(why), "{case}: {}", out.stderr);
        assert_eq!(
            env.keys(&env.prefix).len(),
            3,
            "{case}: something was claimed"
        );
        assert!(env.journals().is_empty(), "{case}: a journal was made");
        let check: Vec<&str> = ["check", "--json"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let out = env.run_with(&check, &vars);
        out.expect(1);
        let fails = check_failures(&out);
        assert!(
            fails.iter().any(|(c, f)| c == code && f.contains(why)),
            "{case}: {fails:#?}"
        );
    }
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 3);
}

#[test]
fn a_redis_user_without_the_rights_a_flush_needs_is_refused_before_anything_is_claimed() {
    let env = TestEnv::new(3);
    env.set_many(3, |_| 1);
    let user = format!("narrow_{}", env.n);
    // The deployment guide's ACL, but without the journal prefix: claims could not be journaled.
    let acl: Vec<String> = env
        .acl_with_keys(&user, "pw", &[])
        .into_iter()
        .filter(|a| *a != format!("~{}*", env.journal_prefix))
        .collect();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(acl)
        .query::<()>(&mut env.redis())
        .unwrap();
    let creds = [("REDIS_USERNAME", user.as_str()), ("REDIS_PASSWORD", "pw")];
    let out = env.run_with(&["run"], &creds);
    out.expect(2);
    assert!(out.stderr.contains(&env.journal_prefix), "{}", out.stderr);
    assert_eq!(env.keys(&env.prefix).len(), 3);
    let out = env.run_with(&["check", "--json"], &creds);
    out.expect(1);
    assert!(
        check_failures(&out)
            .iter()
            .any(|(c, f)| c == "redis.acl" && f.contains(&env.journal_prefix)),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bigint_overflow_is_not_told_to_widen_to_bigint() {
    let env = TestEnv::new(2);
    env.pg()
        .batch_execute(
            "ALTER TABLE urls ALTER COLUMN access_count TYPE bigint;
             UPDATE urls SET access_count = 9223372036854775800 WHERE short_code = 'c1'",
        )
        .unwrap();
    env.set("c1", "100");
    let out = env.run(&["run"]);
    out.expect(1);
    assert!(out.stderr.contains("bigint's range"), "{}", out.stderr);
    assert!(!out.stderr.contains("TYPE bigint"), "{}", out.stderr);
}

#[test]
fn huge_codes_keep_the_summary_short_and_the_batches_small() {
    let env = TestEnv::new(0);
    // 120 codes of 100 KB each, none with a row: 12 MB of codes.
    let mut pipe = redis::pipe();
    for i in 0..120 {
        pipe.cmd("SET")
            .arg(env.key(&format!("{i:03}{}", "x".repeat(100_000))))
            .arg(1)
            .ignore();
    }
    pipe.query::<()>(&mut env.redis()).unwrap();
    let out = env.run(&["run", "--json"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(j["unknown_codes"], 120);
    assert!(
        j["batches"].as_u64().unwrap() >= 2,
        "a batch holds more than its bytes' worth: {}",
        j["batches"]
    );
    let summary = out.stderr.lines().last().unwrap_or_default();
    assert!(
        summary.len() < 2000,
        "a {} byte summary line",
        summary.len()
    );
    assert!(
        out.stdout.len() < 4000,
        "a {} byte JSON report",
        out.stdout.len()
    );
}

#[test]
fn a_redis_error_says_its_cause_once() {
    let env = TestEnv::new(1);
    let user = format!("nope_{}", env.n);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&[
            user.as_str(),
            "on",
            ">pw",
            "-@all",
            "+ping",
            "+info",
            "+eval",
        ])
        .query::<()>(&mut env.redis())
        .unwrap();
    env.set("c1", "1");
    let out = env.run_with(
        &["run"],
        &[("REDIS_USERNAME", user.as_str()), ("REDIS_PASSWORD", "pw")],
    );
    out.expect(2);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("NoPerm"))
        .unwrap_or_default();
    assert_eq!(line.matches("NoPerm").count(), 1, "{line}");
}
