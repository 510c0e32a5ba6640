//! Settings that must not go wrong silently: `.env` that does not parse, URLs that do not
//! parse unambiguously, empty values, TLS in every libpq spelling, timeouts out of range,
//! closed pipes. None of them may print a secret, panic, or fall back to a default.

mod common;

use common::TestEnv;

/// A password to look for in every output.
const SECRET: &str = "s3cr3t-Pa55";

fn assert_no_secret(out: &common::Outcome) {
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
    // The private server has no TLS: require must refuse, not fall back to plaintext.
    let out = env.run_with(
        &["run"],
        &[("DATABASE_URL", &format!("{base} sslmode=require"))],
    );
    out.expect(1);
    assert!(out.stderr.contains("sslmode=require"), "{}", out.stderr);
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
fn with_closed(env: &TestEnv, args: &[&str], stderr: bool) -> common::Outcome {
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
    common::Outcome::of(&out)
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
