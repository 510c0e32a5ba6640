//! Configuration precedence, usage errors, `--dry-run`, error messages and secrets, and the
//! ledger table's life: created, refused to a role without CREATE, pruned.

use crate::common::{start_redis, TestEnv};
use redis_flusher::redis::RedisSource;

#[test]
fn dotenv_fills_in_what_the_environment_does_not_set() {
    let env = TestEnv::new(2);
    env.set("c1", "4");
    std::fs::write(
        env.workdir.path().join(".env"),
        format!(
            "REDIS_HOST=127.0.0.1\nREDIS_PORT={}\nDB_PORT={}\nDB_NAME=no_such_db\n",
            env.redis_port, env.pg_port
        ),
    )
    .unwrap();
    let mut cmd = env.cmd();
    cmd.env_remove("REDIS_PORT")
        .env_remove("DB_PORT")
        .arg("run");
    // DB_NAME comes from the environment (the real database), the ports from `.env`.
    env.output(cmd).expect(0);
    assert_eq!(env.count("c1"), 4);
}

#[test]
fn env_file_flag_reads_another_file() {
    let env = TestEnv::new(2);
    env.set("c2", "6");
    let file = env.workdir.path().join("flusher.env");
    std::fs::write(
        &file,
        format!("REDIS_PORT={}\nDB_PORT={}\n", env.redis_port, env.pg_port),
    )
    .unwrap();
    // A `.env` that would break the run must be ignored when `--env-file` is given.
    std::fs::write(env.workdir.path().join(".env"), "REDIS_PORT=1\n").unwrap();
    let mut cmd = env.cmd();
    cmd.env_remove("REDIS_PORT")
        .env_remove("DB_PORT")
        .args(["run", "--env-file"])
        .arg(&file);
    env.output(cmd).expect(0);
    assert_eq!(env.count("c2"), 6);
}

#[test]
fn flags_win_over_the_environment() {
    let env = TestEnv::new(2);
    env.set("c1", "2");
    let out = env.run_with(
        &[
            "run",
            "--table",
            "urls",
            "--db-port",
            &env.pg_port.to_string(),
        ],
        &[("REDIS_FLUSHER_TABLE", "no_such_table"), ("DB_PORT", "1")],
    );
    out.expect(0);
    assert_eq!(env.count("c1"), 2);
}

#[test]
fn urls_win_over_the_parts() {
    let env = TestEnv::new(2);
    env.set("c1", "9");
    let out = env.run_with(
        &["run"],
        &[
            (
                "REDIS_URL",
                &format!("redis://127.0.0.1:{}/0", env.redis_port),
            ),
            ("REDIS_PORT", "1"),
            (
                "DATABASE_URL",
                &format!("postgres://postgres@127.0.0.1:{}/{}", env.pg_port, env.db),
            ),
            ("DB_PORT", "1"),
            ("DB_NAME", "no_such_db"),
        ],
    );
    out.expect(0);
    assert_eq!(env.count("c1"), 9);
}

#[test]
fn redis_db_selects_the_database_number() {
    let env = TestEnv::new(2);
    let mut con = env.redis();
    redis::cmd("SELECT").arg(3).query::<()>(&mut con).unwrap();
    redis::cmd("SET")
        .arg(env.key("c1"))
        .arg(5)
        .query::<()>(&mut con)
        .unwrap();
    env.set("c2", "1"); // in db 0: not ours this time
    env.run_with(&["run"], &[("REDIS_DB", "3")]).expect(0);
    assert_eq!(env.count("c1"), 5);
    assert_eq!(env.count("c2"), 0);
    let left: Option<String> = redis::cmd("GET")
        .arg(env.key("c1"))
        .query(&mut con)
        .unwrap();
    assert_eq!(left, None);
    redis::cmd("FLUSHDB").query::<()>(&mut con).unwrap();
}

#[test]
fn usage_errors_exit_2_and_say_what_to_fix() {
    let env = TestEnv::new(1);
    env.set("c1", "1");
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--pattern", "url_hits:"], "must end in one `*`"),
        (&["run", "--pattern", "url_*:*"], "only one `*`"),
        (&["run", "--pattern", "*"], "literal prefix"),
        (
            &["run", "--table", "urls; DROP TABLE urls"],
            "`--table` must be a plain SQL name",
        ),
        (&["run", "--count-column", "a b"], "`--count-column`"),
        (&["run", "--batch-size", "0"], "--batch-size"),
        (
            &["run", "--env-file", "/no/such/file"],
            "could not read `--env-file`",
        ),
        (
            &["run", "--journal-prefix", &format!("{}j:", env.prefix)],
            "`--journal-prefix`",
        ),
        (&["run", "--no-such-flag"], "--no-such-flag"),
    ];
    for (args, says) in cases {
        let out = env.run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(says),
            "{args:?} should say {says:?}: {}",
            out.stderr
        );
    }
    let out = env.run_with(&["run"], &[("REDIS_URL", "http://nope")]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("`REDIS_URL` is not a valid Redis URL"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 1);
}

#[test]
fn connection_errors_name_the_server_and_the_variable_but_never_a_password() {
    let env = TestEnv::new(1);
    let closed = crate::common::free_port().to_string();
    let secret = "s3cret-Pa55word";
    // (environment, how the server is named, the variable to fix)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("REDIS_PORT", closed.clone()),
                ("REDIS_PASSWORD", secret.into()),
            ],
            "could not connect to Redis at 127.0.0.1:",
            "`REDIS_HOST`",
        ),
        (
            vec![("DB_PORT", closed.clone()), ("DB_PASSWORD", secret.into())],
            "could not connect to PostgreSQL at postgres@127.0.0.1:",
            "`DB_HOST`",
        ),
        (
            vec![(
                "REDIS_URL",
                format!("redis://app:{secret}@127.0.0.1:{closed}/0"),
            )],
            "could not connect to Redis at 127.0.0.1:",
            "`REDIS_URL`",
        ),
        (
            vec![(
                "DATABASE_URL",
                format!("postgres://app:{secret}@127.0.0.1:{closed}/x"),
            )],
            "could not connect to PostgreSQL at app@127.0.0.1:",
            "`DATABASE_URL`",
        ),
    ];
    for (vars, names, hint) in cases {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = env.run_with(&["run", "--json"], &pairs);
        assert_eq!(out.code, Some(1), "{vars:?}: {}", out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            all.contains(names),
            "{vars:?} should name the server: {all}"
        );
        assert!(
            all.contains(&closed),
            "{vars:?} should name the port: {all}"
        );
        assert!(all.contains(hint), "{vars:?} should name {hint}: {all}");
        assert!(!all.contains(secret), "{vars:?} leaked the password: {all}");
        assert_eq!(out.json()["status"], "failed");
    }
}

#[test]
fn a_wrong_redis_password_is_an_error_that_does_not_echo_it() {
    let server = start_redis(&["--requirepass", "right-password"]);
    let env = TestEnv::on(server.port, crate::common::servers().pg_port, 1);
    env.set_with_password("c1", "3", "right-password");
    let out = env.run_with(&["run"], &[("REDIS_PASSWORD", "wrong-password")]);
    // A person must change it: exit 2, not the 1 of a failure the next run can get past.
    out.expect(2);
    assert!(out.stderr.contains("`REDIS_PASSWORD`"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-password"), "{}", out.stderr);
    env.run_with(&["run"], &[("REDIS_PASSWORD", "right-password")])
        .expect(0);
    assert_eq!(env.count("c1"), 3);
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let env = TestEnv::new(0);
    for args in [&["--help"][..], &["run", "--help"], &["demo", "--help"]] {
        let out = env.run_with(
            args,
            &[
                ("REDIS_URL", "redis://u:hunter2secret@h:1/0"),
                ("DATABASE_URL", "postgres://u:hunter2secret@h/db"),
                ("REDIS_PASSWORD", "hunter2secret"),
            ],
        );
        out.expect(0);
        assert!(
            !out.stdout.contains("hunter2secret"),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = env.run(&["run", "--help"]);
    for says in [
        "Examples:",
        "REDIS_PASSWORD",
        "DB_NAME",
        "Exit codes",
        "--dry-run",
        "--keep-unknown",
    ] {
        assert!(out.stdout.contains(says), "run --help lacks {says:?}");
    }
}

#[test]
fn dry_run_reports_and_changes_nothing_anywhere() {
    let env = TestEnv::new(10);
    let expected = env.set_many(8, i64::from);
    env.set("ghost", "5");
    env.set("bad", "x");
    // A journal pending from a killed run, which the dry run reports and does not apply.
    env.set("c9", "100");
    let before_keys = env.keys(&env.prefix);
    let out = env.run(&["run", "--dry-run", "--json"]);
    out.expect(0);
    let j = out.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["keys"], 10);
    assert_eq!(j["hits"], expected + 5 + 100);
    assert_eq!(j["rows_updated"], 9);
    assert_eq!(j["unknown_codes"], 1);
    assert_eq!(j["unknown_examples"], serde_json::json!(["ghost"]));
    assert_eq!(j["bad_keys"], 1);
    assert_eq!(j["pending_journals"], 0);
    assert_eq!(env.keys(&env.prefix), before_keys);
    assert_eq!(env.total(), 0);
    let ledger: bool = env
        .pg()
        .query_one(
            "SELECT to_regclass('redis_flusher_batches') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!ledger, "a dry run must not even create the ledger table");

    // With a pending journal, and as text on stdout.
    env.kill_after_first_claim();
    let journals = env.journals();
    let ledger_rows = env.ledger_rows();
    let out = env.run(&["run", "--dry-run"]);
    out.expect(0);
    assert!(
        out.stdout.contains("dry run: nothing was changed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("journals pending:     1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("bad keys:             1, e.g."),
        "{}",
        out.stdout
    );
    assert_eq!(env.journals(), journals);
    assert_eq!(env.ledger_rows(), ledger_rows);
    assert_eq!(env.total(), 0);
}

#[test]
fn a_role_that_may_not_create_the_ledger_gets_its_ddl() {
    let env = TestEnv::new(3);
    env.set_many(3, |_| 2);
    let role = format!("flusher_ro_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT, UPDATE ON urls TO {role}; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .unwrap();
    let out = env.run_with(&["run"], &[("DB_USER", &role)]);
    out.expect(2);
    assert!(
        out.stderr.contains(
            "table `redis_flusher_batches` and table `redis_flusher_runs` and table \
             `redis_flusher_leases` and table `redis_flusher_quarantine` are missing and this \
             role may not create them"
        ),
        "{}",
        out.stderr
    );
    let start = out.stderr.find("CREATE TABLE").expect("the DDL is printed");
    let end = out.stderr[start..]
        .find("\n\n")
        .map(|e| start + e)
        .expect("end of DDL");
    let ddl = &out.stderr[start..end];
    assert_eq!(
        env.keys(&env.prefix).len(),
        3,
        "nothing claimed before the ledger exists"
    );

    // A DBA runs exactly what was printed: the tables, and the GRANTs to this role.
    assert!(
        ddl.contains(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON \"redis_flusher_leases\" TO \"{role}\";"
        )),
        "{ddl}"
    );
    env.pg().batch_execute(ddl).unwrap();
    env.run_with(&["run"], &[("DB_USER", &role)]).expect(0);
    assert_eq!(env.total(), 6);
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn ledger_rows_older_than_the_retention_are_pruned() {
    let env = TestEnv::new(2);
    env.set("c1", "1");
    env.run(&["run"]).expect(0);
    // This flusher's batch ids start with its owner tag: it prunes its own rows only.
    let first: String = env
        .pg()
        .query_one("SELECT batch_id FROM redis_flusher_batches", &[])
        .unwrap()
        .get(0);
    let owner = first.split_once('.').expect("an owner tag").0.to_owned();
    env.pg()
        .batch_execute(&format!(
            "INSERT INTO redis_flusher_batches (batch_id, applied_at, keys, hits, rows_updated, \
             unknown_keys, unknown_hits, unknown_codes, unknown_counts, recovered) VALUES \
             ('{owner}.old', now() - interval '31 days', 1, 1, 1, 0, 0, '{{}}', '{{}}', false), \
             ('{owner}.recent', now() - interval '29 days', 1, 1, 1, 0, 0, '{{}}', '{{}}', \
             false), \
             ('before-0.2', now() - interval '90 days', 1, 1, 1, 0, 0, '{{}}', '{{}}', false)"
        ))
        .unwrap();
    env.set("c2", "1");
    env.run(&["run"]).expect(0);
    let ids: Vec<String> = env
        .pg()
        .query(
            "SELECT batch_id FROM redis_flusher_batches ORDER BY applied_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    // A row from before owner tags may guard another flusher's journal: it stays.
    assert_eq!(ids[0], "before-0.2");
    assert_eq!(ids[1], format!("{owner}.recent"));
    env.pg()
        .batch_execute(&format!(
            "UPDATE redis_flusher_batches SET applied_at = now() - interval '8 days' \
             WHERE batch_id = '{owner}.recent'"
        ))
        .unwrap();
    env.run(&["run", "--ledger-days", "7"]).expect(0);
    let n: i64 = env
        .pg()
        .query_one(
            "SELECT count(*) FROM redis_flusher_batches WHERE batch_id = $1",
            &[&format!("{owner}.recent")],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn a_journal_sealed_by_another_run_stops_a_late_claim() {
    // A run that lost its lock (its Postgres connection died) may still claim; once another
    // run has sealed its journal for recovery, that claim must fail, not be deleted unapplied.
    let env = TestEnv::new(3);
    let journal = format!("{}sealed-1", env.journal_prefix);
    redis::cmd("HSET")
        .arg(&journal)
        .arg("c0")
        .arg(redis_flusher::model::encode(&[
            redis_flusher::model::Entry {
                code: "c1".into(),
                hits: 2,
            },
        ]))
        .query::<()>(&mut env.redis())
        .unwrap();
    env.set("c2", "5");
    let cfg = env.config(&[]);
    let mut source = RedisSource::connect(&cfg.redis, &cfg.flush.source).unwrap();
    let err = source
        .claim("sealed-1", "c1", false, &[env.key("c2").into_bytes()])
        .unwrap_err();
    assert!(format!("{err:#}").contains("sealed"), "{err:#}");
    assert_eq!(
        env.get(&env.key("c2")),
        Some(b"5".to_vec()),
        "the late key stays live"
    );
    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c1"), 2);
    assert_eq!(env.count("c2"), 5);
}

#[test]
fn a_key_listed_twice_in_one_claim_is_taken_once() {
    // SCAN returns a key twice while Redis rehashes; a chunk can then hold it twice.
    let env = TestEnv::new(2);
    env.set("c1", "5");
    env.set("bad", "x");
    let cfg = env.config(&[]);
    let mut source = RedisSource::connect(&cfg.redis, &cfg.flush.source).unwrap();
    let k = env.key("c1").into_bytes();
    let b = env.key("bad").into_bytes();
    let keys = [k.clone(), b.clone(), k.clone(), b.clone(), k];
    let seen = source.inspect(&keys).unwrap();
    assert_eq!(seen.entries.len(), 1);
    assert_eq!(seen.bad.len(), 1);
    let claimed = source.claim("twice-1", "c0", true, &keys).unwrap();
    assert_eq!(claimed.entries.len(), 1);
    assert_eq!(claimed.entries[0].hits, 5);
    assert_eq!(claimed.bad.len(), 1);
    env.run(&["run"]).expect(0); // recovers the journal
    assert_eq!(env.count("c1"), 5);
}

#[test]
fn passwords_can_come_from_files_and_never_show_in_any_output() {
    let redis_secret = "r3dis-Secret-xyz";
    let db_secret = "pg-Secret-abc";
    let server = start_redis(&["--requirepass", redis_secret]);
    let env = TestEnv::on(server.port, crate::common::servers().pg_port, 3);
    env.set_with_password("c1", "3", redis_secret);
    let role = format!("flusher_pw_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{db_secret}' IN ROLE password_users; \
             GRANT SELECT, UPDATE ON urls TO {role}; GRANT CREATE ON SCHEMA public TO {role}"
        ))
        .unwrap();
    let dir = env.workdir.path();
    let file = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    // As secrets are mounted: with a trailing newline.
    let redis_file = file("redis_pw", &format!("{redis_secret}\n"));
    let db_file = file("db_pw", &format!("{db_secret}\n"));
    let wrong_redis = file("wrong_redis", "not-it\n");
    let wrong_db = file("wrong_db", "not-it\n");
    let missing = dir.join("nope").to_str().unwrap().to_owned();

    // (environment, exit code of run and status, what the output must say). A wrong password
    // is 2 (a person must change it) for a run; `check` says 1, a flush could not work.
    type Case<'a> = (Vec<(&'a str, &'a str)>, i32, &'a str);
    let failing: Vec<Case> = vec![
        (
            vec![
                ("REDIS_PASSWORD_FILE", &wrong_redis),
                ("DB_PASSWORD_FILE", &db_file),
            ],
            2,
            "could not connect to Redis",
        ),
        (
            vec![
                ("REDIS_PASSWORD_FILE", &redis_file),
                ("DB_PASSWORD_FILE", &wrong_db),
            ],
            2,
            "could not connect to PostgreSQL",
        ),
        (
            vec![
                ("REDIS_PASSWORD_FILE", &redis_file),
                ("REDIS_PASSWORD", redis_secret),
            ],
            2,
            "both `REDIS_PASSWORD` and `REDIS_PASSWORD_FILE` are set",
        ),
        (
            vec![
                ("REDIS_PASSWORD_FILE", &redis_file),
                ("DB_PASSWORD_FILE", &missing),
            ],
            2,
            "`DB_PASSWORD_FILE` names",
        ),
    ];
    for (vars, code, says) in failing {
        let vars: Vec<(&str, &str)> = vars
            .into_iter()
            .chain([("DB_USER", role.as_str())])
            .collect();
        for args in [&["run", "--json"][..], &["check"], &["status"]] {
            let out = env.run_with(args, &vars);
            // `check` reports a server it cannot log in to as a finding: a flush could not
            // work, exit 1. Settings that do not parse are exit 2 for every command.
            let code = if args == ["check"] && says.starts_with("could not") {
                1
            } else {
                code
            };
            assert_eq!(out.code, Some(code), "{args:?} {vars:?}: {}", out.stderr);
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(
                all.contains(says),
                "{args:?} {vars:?} should say {says:?}: {all}"
            );
            for secret in [redis_secret, db_secret] {
                assert!(
                    !all.contains(secret),
                    "{args:?} {vars:?} leaked a password: {all}"
                );
            }
        }
    }
    assert_eq!(env.total(), 0, "nothing applied by a failing configuration");

    let out = env.run_with(
        &["run"],
        &[
            ("REDIS_PASSWORD_FILE", &redis_file),
            ("DB_PASSWORD_FILE", &db_file),
            ("DB_USER", &role),
        ],
    );
    out.expect(0);
    assert_eq!(env.count("c1"), 3);
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn an_acl_user_with_only_the_readme_rights_flushes_exactly() {
    let env = TestEnv::new(50);
    let user = format!("flusher_{}", env.n);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(env.least_acl(&user, "acl-pw"))
        .query::<()>(&mut env.redis())
        .unwrap();
    let expected = env.set_many(50, |i| i64::from(i % 4 + 1));
    env.set("ghost", "6");
    env.set("bad", "x");
    let creds = [
        ("REDIS_USERNAME", user.as_str()),
        ("REDIS_PASSWORD", "acl-pw"),
    ];
    // A kill after a claim, so that the next run also recovers (seal, ledger, ack).
    let mut killing = creds.to_vec();
    killing.push(("REDIS_FLUSHER_FAULT", "after_claim"));
    env.run_with(&["run", "--keep-unknown", "--batch-size", "20"], &killing)
        .expect_killed();
    env.run_with(&["check"], &creds).expect(0);
    let status = env.run_with(&["status", "--json"], &creds);
    status.expect(0);
    assert_eq!(status.json()["pending"]["batches"], 1);
    let out = env.run_with(
        &["run", "--keep-unknown", "--batch-size", "20", "--json"],
        &creds,
    );
    out.expect(0);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), expected);
    let parked: Option<i64> = redis::cmd("HGET")
        .arg(&env.unknown_key)
        .arg("ghost")
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(parked, Some(6));
    assert_eq!(env.keys(&env.prefix), [env.key("bad")]);
    assert!(env.journals().is_empty());
    // The user really is that narrow: another key, or a command it was not given, is refused.
    let mut narrow = redis::Client::open(format!(
        "redis://{user}:acl-pw@127.0.0.1:{}/",
        env.redis_port
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let other: redis::RedisResult<Option<String>> = redis::cmd("MGET")
        .arg("someone_else:key")
        .query(&mut narrow);
    assert!(other.is_err(), "a key outside the patterns was readable");
    let flushall: redis::RedisResult<()> = redis::cmd("FLUSHALL").query(&mut narrow);
    assert!(flushall.is_err());
}
