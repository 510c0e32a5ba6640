//! Settings that must not go wrong silently: `.env` that does not parse, URLs that do not
//! parse unambiguously, empty values, TLS in every libpq spelling, timeouts out of range,
//! closed pipes. None of them may print a secret, panic, or fall back to a default.

use crate::common::TestEnv;

/// A password to look for in every output.
const SECRET: &str = "s3cr3t-Pa55";

fn assert_no_secret(out: &crate::common::Outcome) {
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains(SECRET), "{name} shows the password:\n{text}");
        assert!(
            !text.contains("Pa55"),
            "{name} shows part of the password:\n{text}"
        );
    }
}

#[test]
fn a_dotenv_line_that_does_not_parse_is_named_without_its_value() {
    let env = TestEnv::new(1);
    std::fs::write(
        env.workdir.path().join(".env"),
        format!("# settings\nREDIS_FLUSHER_TABLE=urls\n\nDB_PASSWORD=\"{SECRET}\nDB_NAME=app\n"),
    )
    .unwrap();
    let out = env.run(&["run"]);
    out.expect(2);
    assert_no_secret(&out);
    assert!(
        out.stderr.contains(".env line 4") && out.stderr.contains("`DB_PASSWORD`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_database_url_with_a_raw_at_in_its_password_is_refused_without_showing_it() {
    let env = TestEnv::new(1);
    let url = format!(
        "postgres://postgres:{SECRET}@x@127.0.0.1:{}/{}",
        env.pg_port, env.db
    );
    let out = env.run_with(&["run"], &[("DATABASE_URL", &url)]);
    out.expect(2);
    assert_no_secret(&out);
    assert!(
        out.stderr.contains("`%40`") && out.stderr.contains("`DATABASE_URL`"),
        "{}",
        out.stderr
    );
    // Percent-encoded, the same password works (the role has none; trust auth).
    let encoded = format!(
        "postgres://postgres:{SECRET}%40x@127.0.0.1:{}/{}",
        env.pg_port, env.db
    );
    env.set("c1", "1");
    let out = env.run_with(&["run"], &[("DATABASE_URL", &encoded)]);
    out.expect(0);
    assert_no_secret(&out);
    assert_eq!(env.total(), 1);
}

#[test]
fn empty_urls_and_required_settings_are_usage_errors_not_defaults() {
    let env = TestEnv::new(1);
    env.set("c1", "1");
    for (var, value) in [
        ("REDIS_URL", ""),
        ("REDIS_URL", "  "),
        ("DATABASE_URL", ""),
        ("DB_NAME", ""),
        ("DB_USER", ""),
        ("REDIS_HOST", ""),
    ] {
        let out = env.run_with(&["run"], &[(var, value)]);
        out.expect(2);
        assert!(
            out.stderr.contains(&format!("`{var}` is empty")),
            "{var}: {}",
            out.stderr
        );
    }
    let out = env.run(&["run", "--redis-url", ""]);
    out.expect(2);
    assert!(
        out.stderr.contains("`--redis-url` is empty"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), 0);
    assert_eq!(env.keys(&env.prefix).len(), 1, "nothing claimed");
}

#[test]
fn libpq_key_value_strings_keep_their_sslmode() {
    let env = TestEnv::new(1);
    let base = format!(
        "host=127.0.0.1 port={} dbname={} user=postgres",
        env.pg_port, env.db
    );
    // The private server has no TLS: require must refuse, not fall back to plaintext; and a
    // setting must change before any run can work (exit 2, not 1 for cron to repeat).
    let out = env.run_with(
        &["run"],
        &[("DATABASE_URL", &format!("{base} sslmode=require"))],
    );
    out.expect(2);
    assert!(out.stderr.contains("sslmode=require"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the server offers no TLS and `sslmode` requires it"),
        "{}",
        out.stderr
    );
    let out = env.run_with(
        &["run"],
        &[(
            "DATABASE_URL",
            &format!("{base} sslmode = 'verify-full' sslrootcert='/nonexistent/ca.pem'"),
        )],
    );
    out.expect(2);
    assert!(
        out.stderr.contains("/nonexistent/ca.pem")
            && !out.stderr.contains("invalid connection string"),
        "{}",
        out.stderr
    );
    env.set("c1", "2");
    env.run_with(
        &["run"],
        &[("DATABASE_URL", &format!("{base} sslmode=disable"))],
    )
    .expect(0);
    assert_eq!(env.total(), 2);
}

#[test]
fn timeouts_out_of_range_are_refused_not_wrapped() {
    let env = TestEnv::new(1);
    for (flag, value) in [
        ("--statement-timeout", "18446744073709551615"),
        ("--connect-timeout", "18446744073709551615"),
        ("--statement-timeout", "0"),
        ("--lock-timeout", "0"),
        ("--command-timeout", "0"),
        ("--statement-timeout", "2147484"),
    ] {
        let out = env.run(&["run", flag, value]);
        out.expect(2);
        assert!(out.stderr.contains(flag), "{flag} {value}: {}", out.stderr);
    }
}

/// Runs `redis-flusher <args>` with stdout (or stderr) closed at the reader's end.
fn with_closed(env: &TestEnv, args: &[&str], stderr: bool) -> crate::common::Outcome {
    use std::process::Stdio;
    let mut cmd = env.cmd();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Close the read end before the program writes: its writes fail with EPIPE.
    if stderr {
        drop(child.stderr.take());
    } else {
        drop(child.stdout.take());
    }
    let out = child.wait_with_output().unwrap();
    crate::common::Outcome::of(&out)
}

#[test]
fn a_closed_pipe_ends_quietly_with_the_runs_own_exit_code() {
    let env = TestEnv::new(3);
    env.run(&["run"]).expect(0);
    for args in [
        &["status"][..],
        &["check"],
        &["run", "--dry-run"],
        &["run", "--json"],
    ] {
        env.set("c1", "1");
        let out = with_closed(&env, args, false);
        assert!(
            !out.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            out.stderr
        );
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    }
    // The run's work is done however stdout went: `run --json` above flushed c1.
    assert_eq!(env.total(), 1);
    // A usage error with stderr closed: exit 2, no panic (101).
    let out = with_closed(&env, &["run", "--no-such-flag"], true);
    assert_eq!(out.code, Some(2));
}

#[test]
fn a_full_stdout_is_an_error_that_says_so() {
    let env = TestEnv::new(3);
    env.set("c1", "1");
    let mut cmd = env.cmd();
    cmd.args(["run", "--json"]).stdout(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    );
    let out = env.output(cmd);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("could not write the report"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), 1, "the run itself committed");
}

#[test]
fn tls_to_a_plain_redis_says_the_handshake_got_no_answer() {
    let env = TestEnv::new(1);
    let url = format!("rediss://127.0.0.1:{}/", env.redis_port);
    let started = std::time::Instant::now();
    let out = env.run_with(
        &["run"],
        &[("REDIS_URL", &url), ("REDIS_FLUSHER_CONNECT_TIMEOUT", "2")],
    );
    assert_ne!(out.code, Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        out.stderr.contains("TLS") && out.stderr.contains("not a TLS port"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_postgres_port_that_is_not_postgres_is_named_as_such() {
    let env = TestEnv::new(1);
    let started = std::time::Instant::now();
    let out = env.run_with(
        &["run"],
        &[
            ("DB_PORT", &env.redis_port.to_string()),
            ("REDIS_FLUSHER_CONNECT_TIMEOUT", "2"),
        ],
    );
    assert_eq!(out.code, Some(1));
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(6), "took {took:?}");
    assert!(
        out.stderr.contains("not PostgreSQL") && out.stderr.contains("`DB_PORT`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_misspelt_variable_is_warned_about_with_the_name_it_was_meant_to_be() {
    let env = TestEnv::new(2);
    env.set("c1", "4");
    std::fs::write(
        env.workdir.path().join(".env"),
        "# our app\nREDIS_FLUSHER_PATERN=nc_hits:*\n",
    )
    .unwrap();
    let typo_in_environment = [("DB_PASWORD", "x"), ("REDIS_FLUSHER_BATCHSIZE", "9")];
    // A misspelt secret stops a run (it would go on without its password); the others warn.
    let refused = env.run_with(&["run"], &typo_in_environment);
    refused.expect(2);
    assert_eq!(env.count("c1"), 0);
    let out = env.run_with(&["run"], &typo_in_environment[1..]);
    out.expect(0);
    let said = format!("{}{}", refused.stderr, out.stderr);
    for says in [
        "`REDIS_FLUSHER_PATERN` (in .env line 2) is not a setting of redis-flusher",
        "did you mean `REDIS_FLUSHER_PATTERN`?",
        "`DB_PASWORD` (in the environment)",
        "did you mean `DB_PASSWORD`?",
        "did you mean `REDIS_FLUSHER_BATCH_SIZE`?",
    ] {
        assert!(said.contains(says), "should say {says:?}:\n{said}");
    }
    // The warning is all it does: the run used the pattern it was given.
    assert_eq!(env.count("c1"), 4);

    let out = env.run_with(&["check"], &typo_in_environment);
    out.expect(1);
    let fails: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 3, "{}", out.stdout);
    assert!(fails[0].contains("`DB_PASWORD`"), "{}", out.stdout);
    assert!(
        fails[1].contains("`REDIS_FLUSHER_BATCHSIZE`"),
        "{}",
        out.stdout
    );
    assert!(
        fails[2].contains("`REDIS_FLUSHER_PATERN`"),
        "{}",
        out.stdout
    );
}

/// The lines of the target block in `out` (dry run or check), as (what, value, source).
fn target_lines(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("target"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            // "  {what:<13} {value:<40} {source}"
            let column = |from: usize, to: usize| l.get(from..to.min(l.len())).unwrap_or("");
            (
                column(2, 15).trim().to_owned(),
                column(16, 56).trim().to_owned(),
                column(57, l.len()).trim().to_owned(),
            )
        })
        .collect()
}

#[test]
fn dry_run_check_and_run_say_what_they_touch_and_where_each_setting_came_from() {
    let env = TestEnv::new(3);
    env.set("c2", "5");
    std::fs::write(
        env.workdir.path().join(".env"),
        "# flusher\n\nREDIS_FLUSHER_TABLE=urls\n",
    )
    .unwrap();
    let expected = |env: &TestEnv| {
        vec![
            (
                "Redis".to_owned(),
                format!("127.0.0.1:{} db 0", env.redis_port),
                "env REDIS_HOST + env REDIS_PORT".to_owned(),
            ),
            (
                "pattern".into(),
                format!("{}*", env.prefix),
                "env REDIS_FLUSHER_PATTERN".into(),
            ),
            (
                "journals".into(),
                format!("{}…", env.journal_prefix),
                "env REDIS_FLUSHER_JOURNAL_PREFIX".into(),
            ),
            (
                "PostgreSQL".into(),
                format!("postgres@127.0.0.1:{}/{}", env.pg_port, env.db),
                "env DB_HOST + env DB_PORT + env DB_NAME + env DB_USER".into(),
            ),
            (
                "table".into(),
                "urls".into(),
                ".env:3 REDIS_FLUSHER_TABLE".into(),
            ),
            (
                "code column".into(),
                "short_code".into(),
                "--code-column".into(),
            ),
            (
                "count column".into(),
                "access_count".into(),
                "default".into(),
            ),
        ]
    };
    let out = env.run(&["run", "--dry-run", "--code-column", "short_code"]);
    out.expect(0);
    assert_eq!(target_lines(&out.stdout), expected(&env), "{}", out.stdout);
    let out = env.run(&["check", "--code-column", "short_code"]);
    out.expect(0);
    assert_eq!(target_lines(&out.stdout), expected(&env), "{}", out.stdout);
    let out = env.run(&["run", "--dry-run", "--json", "--code-column", "short_code"]);
    let j = out.json();
    assert_eq!(j["target"][4]["source"], ".env:3 REDIS_FLUSHER_TABLE");
    assert_eq!(j["target"][4]["value"], "urls");
    assert_eq!(env.count("c2"), 0, "a dry run and a check change nothing");

    let out = env.run(&["run", "--code-column", "short_code"]);
    out.expect(0);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "flushing {}* from Redis at 127.0.0.1:{} db 0",
            env.prefix, env.redis_port
        )) && first.contains("; table: .env:3 REDIS_FLUSHER_TABLE;")
            && first.contains("; code column: --code-column;")
            && first.contains("; count column: default)"),
        "the first log line should name the target and its sources: {first}"
    );
    assert_eq!(env.count("c2"), 5);
}

#[test]
fn a_failed_dry_run_or_run_says_it_failed_on_stdout() {
    let env = TestEnv::new(2);
    env.set("c1", "3");
    let nothing = crate::common::free_port().to_string();
    let down = [("DB_PORT", nothing.as_str())];
    let out = env.run_with(&["run", "--dry-run"], &down);
    out.expect(1);
    assert!(
        out.stdout
            .starts_with("dry run FAILED (nothing was changed): could not connect to PostgreSQL"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("keys to flush"), "{}", out.stdout);
    let out = env.run_with(&["run", "--dry-run", "--json"], &down);
    out.expect(1);
    assert_eq!(out.json()["status"], "failed");
    assert_eq!(out.json()["dry_run"], true);

    let out = env.run_with(&["run"], &down);
    out.expect(1);
    assert!(
        out.stdout
            .starts_with("run FAILED: could not connect to PostgreSQL"),
        "{}",
        out.stdout
    );
    let out = env.run_with(&["run", "--json"], &down);
    out.expect(1);
    assert_eq!(out.json()["status"], "failed");
    assert_eq!(env.keys(&env.prefix).len(), 1, "the hits wait in Redis");
    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c1"), 3);
}

#[test]
fn exit_codes_say_whether_a_person_must_act() {
    let env = TestEnv::new(2);
    env.set("c1", "7");
    let nothing = crate::common::free_port().to_string();
    // (what is wrong, extra environment, exit code): 2 when no run can work until a person
    // changes something, 1 when the next run can finish, 0 when there was nothing to do.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i32);
    let cases: Vec<Case> = vec![
        ("a bad value", vec![("REDIS_FLUSHER_BATCH_SIZE", "zero")], 2),
        ("a missing database", vec![("DB_NAME", "no_such_db")], 2),
        (
            "a missing table",
            vec![("REDIS_FLUSHER_TABLE", "no_such_table")],
            2,
        ),
        (
            "a missing column",
            vec![("REDIS_FLUSHER_COUNT_COLUMN", "no_such_column")],
            2,
        ),
        ("a missing role", vec![("DB_USER", "no_such_role")], 2),
        // A typo in a host name is a setting to fix, not a server to wait for.
        (
            "a Postgres host that does not resolve",
            vec![("DB_HOST", "localhots")],
            2,
        ),
        (
            "a Redis host that does not resolve",
            vec![("REDIS_HOST", "localhots")],
            2,
        ),
        ("Postgres down", vec![("DB_PORT", nothing.as_str())], 1),
        ("Redis down", vec![("REDIS_PORT", nothing.as_str())], 1),
    ];
    for (what, vars, code) in cases {
        let out = env.run_with(&["run"], &vars);
        assert_eq!(out.code, Some(code), "{what}: {}", out.stderr);
        if code == 2 && what != "a bad value" {
            assert!(
                out.stderr.contains("nothing was claimed")
                    && !out.stderr.contains("nothing is lost"),
                "{what}: nothing was claimed, so no journal to talk of: {}",
                out.stderr
            );
        }
        assert_eq!(env.keys(&env.prefix).len(), 1, "{what}: nothing claimed");
        assert!(env.journals().is_empty(), "{what}: no journal");
    }
    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c1"), 7);
    env.run(&["run"]).expect(0); // nothing to do is done too
}

#[test]
fn a_missing_table_or_column_names_the_setting_it_came_from() {
    let env = TestEnv::new(1);
    env.set("c1", "7");
    let dotenv = env.workdir.path().join(".env");
    std::fs::write(
        &dotenv,
        "# the app's settings\nREDIS_FLUSHER_TABLE=no_such_table\n",
    )
    .unwrap();
    let out = env.run(&["run"]);
    out.expect(2);
    assert!(
        out.stderr.contains("`REDIS_FLUSHER_TABLE` (.env line 2)"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&dotenv).unwrap();
    let out = env.run_with(
        &["run"],
        &[("REDIS_FLUSHER_COUNT_COLUMN", "no_such_column")],
    );
    out.expect(2);
    assert!(
        out.stderr.contains("change `REDIS_FLUSHER_COUNT_COLUMN`"),
        "{}",
        out.stderr
    );
    let out = env.run(&["run", "--code-column", "nope"]);
    out.expect(2);
    assert!(
        out.stderr.contains("change `--code-column`"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 1, "nothing claimed");
}

#[test]
fn help_is_short_with_dash_h_long_with_dash_dash_help_and_help_help_works() {
    let env = TestEnv::new(0);
    let short = env.run(&["run", "-h"]);
    short.expect(0);
    let long = env.run(&["run", "--help"]);
    long.expect(0);
    assert_eq!(env.run(&["help", "run"]).stdout, long.stdout);
    let short_lines = short.stdout.lines().count();
    assert!(
        short_lines * 2 < long.stdout.lines().count() && short_lines < 110,
        "-h should be the short form: {short_lines} lines"
    );
    for heading in [
        "Connection: Redis:",
        "Connection: PostgreSQL:",
        "Target:",
        "Batching:",
        "Safety: timeouts, locks, replicas:",
        "Output:",
        "Exit codes:",
    ] {
        assert!(short.stdout.contains(heading), "-h lacks {heading}");
        assert!(long.stdout.contains(heading), "--help lacks {heading}");
    }
    assert!(long.stdout.contains("EnvironmentFile="), "{}", long.stdout);
    assert!(!short.stdout.contains("EnvironmentFile="));
    let out = env.run(&["help", "--help"]);
    out.expect(0);
    assert!(
        out.stdout.contains("Usage: redis-flusher help"),
        "{}",
        out.stdout
    );
    let out = env.run(&["help", "nope"]);
    out.expect(2);
    assert!(
        out.stderr
            .contains("no command `nope`; the commands: run, check"),
        "{}",
        out.stderr
    );
}
