//! What an operator trips on: a target left to the defaults, a misspelt variable, a setting
//! cron would retry for ever, advice that repeats or cannot be pasted, a secret in an error.
//! Each was seen by using the program; each test failed before its fix.

use crate::common::{start_redis, Outcome, TestEnv};

/// Words a password is made of, which no output may show.
const WORDS: [&str; 3] = ["Quokka7", "Zebra9", "Mango3"];

fn shows_no_word(out: &Outcome, case: &str) {
    for w in WORDS {
        assert!(
            !out.stdout.contains(w) && !out.stderr.contains(w),
            "{case}: `{w}` shown:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn a_run_without_a_target_refuses_before_connecting() {
    let env = TestEnv::new(1);
    env.set("c1", "3");
    for (side, unset, says) in [
        (
            "Redis",
            ["REDIS_HOST", "REDIS_PORT", ""],
            "no target was given for Redis",
        ),
        (
            "PostgreSQL",
            ["DB_HOST", "DB_PORT", "DB_NAME"],
            "no target was given for PostgreSQL",
        ),
    ] {
        for verb in [&["run"][..], &["serve", "--interval", "1"]] {
            let mut cmd = env.cmd();
            for var in unset.iter().filter(|v| !v.is_empty()) {
                cmd.env_remove(var);
            }
            cmd.args(verb);
            let out = env.output(cmd);
            out.expect(2);
            assert!(out.stderr.contains(says), "{side}: {}", out.stderr);
            assert!(out.stderr.contains("--env-file"), "{}", out.stderr);
            assert!(
                !out.stderr.contains("flushing "),
                "{side}: it connected: {}",
                out.stderr
            );
        }
    }
    assert_eq!(env.count("c1"), 0);
    assert_eq!(env.keys(&env.prefix).len(), 1, "nothing claimed");
    env.run(&["run"]).expect(0);
    assert_eq!(env.count("c1"), 3);
}

#[test]
fn a_misspelt_server_or_secret_stops_a_run_and_other_typos_warn() {
    let env = TestEnv::new(1);
    env.set("c1", "3");
    let url = format!("redis://127.0.0.1:{}/", env.redis_port);
    // A transposition: one edit away from REDIS_URL, two from REDIS_TLS.
    let out = env.run_with(&["run"], &[("REDIS_ULR", &url)]);
    out.expect(2);
    assert!(
        out.stderr.contains("`REDIS_ULR` (in the environment)")
            && out.stderr.contains("did you mean `REDIS_URL`?")
            && out.stderr.contains("names a server or a secret"),
        "{}",
        out.stderr
    );
    let out = env.run_with(&["run"], &[("DB_PASWORD", "x")]);
    out.expect(2);
    assert!(
        out.stderr.contains("did you mean `DB_PASSWORD`?"),
        "{}",
        out.stderr
    );
    assert_eq!(env.count("c1"), 0, "nothing flushed");
    // A typo that names neither warns, and the run goes on.
    let out = env.run_with(&["run"], &[("REDIS_FLUSHER_CLAIM_SIZ", "10")]);
    out.expect(0);
    assert!(
        out.stderr
            .contains("did you mean `REDIS_FLUSHER_CLAIM_SIZE`?"),
        "{}",
        out.stderr
    );
    assert_eq!(env.count("c1"), 3);
}

#[test]
fn settings_a_person_must_fix_exit_2_not_1() {
    let env = TestEnv::new(1);
    env.set("c1", "1");
    let plain = format!("{}", env.redis_port);
    // TLS to a plain port: the handshake gets no answer.
    let out = env.run_with(
        &["run"],
        &[
            ("REDIS_TLS", "true"),
            ("REDIS_PORT", &plain),
            ("REDIS_FLUSHER_CONNECT_TIMEOUT", "1"),
        ],
    );
    out.expect(2);
    assert!(
        out.stderr.contains("likely not a TLS port"),
        "{}",
        out.stderr
    );
    // A cluster's flag against a Redis that is not one.
    let out = env.run_with(&["run"], &[("REDIS_CLUSTER", "true")]);
    out.expect(2);
    assert!(
        out.stderr.contains("unset `REDIS_CLUSTER`"),
        "{}",
        out.stderr
    );
    // Sentinels that refuse the password given for them.
    let guarded = start_redis(&["--requirepass", "right"]);
    let sentinel = format!("127.0.0.1:{}", guarded.port);
    let mut cmd = env.cmd();
    cmd.env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env("REDIS_SENTINELS", &sentinel)
        .env("REDIS_SENTINEL_PASSWORD", "wrong")
        .arg("run");
    let out = env.output(cmd);
    out.expect(2);
    assert!(
        out.stderr.contains("no sentinel named a master"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "{}", out.stderr);
    // A server that asks for a password, and none was given.
    let role = format!("pw_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'secret' IN ROLE password_users"
        ))
        .unwrap();
    let out = env.run_with(&["run"], &[("DB_USER", &role)]);
    out.expect(2);
    assert!(
        out.stderr.contains("password missing")
            && out.stderr.contains("set `DB_PASSWORD`")
            && out.stderr.contains("DB_HOST=/var/run/postgresql"),
        "{}",
        out.stderr
    );
    assert_eq!(env.count("c1"), 0);
    assert_eq!(env.keys(&env.prefix).len(), 1, "nothing claimed");
}

#[test]
fn no_error_shows_any_part_of_a_connection_string_that_holds_a_password() {
    let env = TestEnv::new(1);
    let (p, db) = (env.pg_port, env.db.clone());
    let pg = [
        format!("host=127.0.0.1 port={p} dbname={db} password=Quokka7 Zebra9-Mango3"),
        format!("host=127.0.0.1 port={p} dbname={db} password='Quokka7 Zebra9-Mango3"),
        format!("host=127.0.0.1 port={p} password=Quokka7 Zebra9=Mango3"),
        format!("host=127.0.0.1 port={p} password=Quokka7 sslmode=Zebra9Mango3"),
        "host=127.0.0.1 port=Zebra9 password=Quokka7Mango3".to_owned(),
        format!("postgres://u:Quokka7@Zebra9@127.0.0.1:{p}/{db}?x=Mango3"),
        format!("postgres://u:Quokka7%ZZ@127.0.0.1:{p}/{db}"),
        format!("postgres://u:Quokka7@127.0.0.1:{p}/{db}?sslmode=Zebra9Mango3"),
        format!("postgres://u:Quokka7@127.0.0.1:{p}/{db}?Zebra9=Mango3"),
        format!("postgres://u:Quokka7@127.0.0.1:Zebra9/{db}"),
        format!("postgres://u:Quokka7@[Zebra9/{db}?Mango3"),
    ];
    for url in &pg {
        let out = env.run_with(&["run", "--json"], &[("DATABASE_URL", url)]);
        out.expect(2);
        assert!(
            out.stderr.contains("`DATABASE_URL`"),
            "{url}: {}",
            out.stderr
        );
        shows_no_word(&out, url);
    }
    let redis = [
        "redis://:Quokka7@Zebra9:notaport/0",
        "redis:/Quokka7@Zebra9",
        "redis://:Quokka7@127.0.0.1/Zebra9",
        "http://:Quokka7@Zebra9",
        "redis://:Quokka7 Zebra9@127.0.0.1/Mango3",
    ];
    for url in redis {
        let out = env.run_with(&["run", "--json"], &[("REDIS_URL", url)]);
        out.expect(2);
        assert!(
            out.stderr
                .contains("`REDIS_URL` is not a valid Redis URL: "),
            "{url}: {}",
            out.stderr
        );
        shows_no_word(&out, url);
        // With --json, stdout says it too.
        assert_eq!(out.json()["status"], "setup_error", "{url}");
    }
}

#[test]
fn a_malformed_redis_url_says_where_it_came_from_and_what_is_wrong() {
    let env = TestEnv::new(1);
    std::fs::write(
        env.workdir.path().join(".env"),
        "# app\n\nREDIS_URL=redis://127.0.0.1:6379/x\n",
    )
    .unwrap();
    let out = env.run(&["run", "--json"]);
    out.expect(2);
    let first = out
        .stderr
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_default();
    assert!(
        first.contains("`REDIS_URL` (.env line 3) is not a valid Redis URL: the database")
            && first.contains("is not a number"),
        "{}",
        out.stderr
    );
    // A timestamp, as every log line has.
    assert!(first.starts_with("20"), "{first}");
    let json = out.json();
    assert_eq!(json["status"], "setup_error");
    assert!(json["errors"][0]
        .as_str()
        .unwrap_or_default()
        .contains("(.env line 3)"));
}

#[test]
fn a_url_given_as_a_flag_with_a_password_is_warned_about_once() {
    let env = TestEnv::new(1);
    let url = format!(
        "postgres://postgres:Quokka7@127.0.0.1:{}/{}",
        env.pg_port, env.db
    );
    let out = env.run(&["run", "--database-url", &url]);
    out.expect(0);
    assert_eq!(
        out.stderr
            .matches("`--database-url` holds a password")
            .count(),
        1,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`DB_PASSWORD_FILE`"), "{}", out.stderr);
    shows_no_word(&out, "--database-url");
    // The same URL from the environment is no news.
    let out = env.run_with(&["run"], &[("DATABASE_URL", &url)]);
    out.expect(0);
    assert!(!out.stderr.contains("holds a password"), "{}", out.stderr);
}

#[test]
fn a_failed_run_gives_its_advice_once() {
    let env = TestEnv::new(2);
    env.set("c1", "2");
    let role = format!("flusher_once_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT, UPDATE ON urls TO {role}; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        ))
        .unwrap();
    let out = env.run_with(&["run"], &[("DB_USER", &role)]);
    out.expect(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        all.matches("CREATE TABLE IF NOT EXISTS \"redis_flusher_batches\"")
            .count(),
        1,
        "{all}"
    );
    // Stdout says it failed and what happened, in a line.
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stdout.starts_with("run FAILED: "), "{}", out.stdout);
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}

#[test]
fn bad_keys_are_warned_about_once_a_run_and_status_names_them() {
    let env = TestEnv::new(2);
    env.set("c1", "2");
    env.set("c2", "many");
    redis::cmd("HSET")
        .arg(env.key("c3"))
        .arg("f")
        .arg("1")
        .query::<()>(&mut env.redis())
        .unwrap();
    let out = env.run(&["run"]);
    out.expect(0);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot be flushed and stay in Redis"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("2 keys under")
            && warnings[0].contains("value is not an integer: 1")
            && warnings[0].contains(&env.key("c2")),
        "{}",
        warnings[0]
    );
    let out = env.run(&["status"]);
    out.expect(0);
    assert!(
        out.stdout.contains("and 2 bad keys a run leaves alone: ")
            && out
                .stdout
                .contains(&format!("{} (value is not an integer)", env.key("c2")))
            && out
                .stdout
                .contains(&format!("{} (not a string key)", env.key("c3"))),
        "{}",
        out.stdout
    );
}

#[test]
fn status_shows_what_waits_in_redis_when_postgres_is_down() {
    let env = TestEnv::new(2);
    env.set("c1", "2");
    env.set("c2", "5");
    let closed = crate::common::free_port().to_string();
    let out = env.run_with(&["status"], &[("DB_PORT", &closed)]);
    out.expect(1);
    assert!(
        out.stdout.starts_with(&format!(
            "waiting in Redis: 2 counters (7 hits) under {}*",
            env.prefix
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("PostgreSQL: could not connect to PostgreSQL"),
        "{}",
        out.stdout
    );
    let json = env.run_with(&["status", "--json"], &[("DB_PORT", &closed)]);
    json.expect(1);
    assert_eq!(json.json()["waiting"]["hits"], 7);
    assert!(json.json()["postgres_error"].is_string());
}

#[test]
fn counts_read_as_words() {
    let env = TestEnv::new(2);
    env.set("c1", "1");
    env.set("nope", "1");
    let out = env.run(&["run"]);
    out.expect(0);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("flushed 2 keys (2 hits) into 1 row in 1 batch; 1 unknown code (1 hit"),
        "{last}"
    );
    assert!(
        !last.contains("1 batches") && !last.contains("1 codes"),
        "{last}"
    );
}

#[test]
fn check_fails_a_metrics_file_no_run_could_write() {
    let env = TestEnv::new(1);
    let missing = env.workdir.path().join("no-such-dir").join("flusher.prom");
    let out = env.run(&[
        "check",
        "--json",
        "--metrics-file",
        missing.to_str().unwrap(),
    ]);
    out.expect(1);
    let found = out.json()["findings"].as_array().unwrap().clone();
    let file = found
        .iter()
        .find(|f| f["code"] == "metrics.file")
        .expect("a finding for the metrics file");
    assert_eq!(file["level"], "fail");
    let ok = env.workdir.path().join("flusher.prom");
    let out = env.run_with(
        &["check", "--json"],
        &[("REDIS_FLUSHER_METRICS_FILE", ok.to_str().unwrap())],
    );
    out.expect(0);
    assert!(out.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "metrics.file" && f["level"] == "ok"));
}

#[test]
fn check_warns_about_an_idle_timeout_that_would_end_a_backlogs_transaction() {
    let env = TestEnv::new(1);
    let role = format!("idle_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT, UPDATE ON urls TO {role};
             GRANT ALL ON SCHEMA public TO {role};
             ALTER ROLE {role} SET idle_in_transaction_session_timeout = '5s'"
        ))
        .unwrap();
    let out = env.run_with(&["check", "--json"], &[("DB_USER", &role)]);
    out.expect(0);
    let found = out.json()["findings"].as_array().unwrap().clone();
    let idle = found
        .iter()
        .find(|f| f["code"] == "pg.idle_in_transaction_timeout")
        .unwrap_or_else(|| panic!("no finding: {found:#?}"));
    assert_eq!(idle["level"], "warn");
    assert!(
        idle["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "ALTER ROLE \"{role}\" SET idle_in_transaction_session_timeout = 0;"
            )),
        "{idle}"
    );
}

#[test]
fn every_option_of_every_man_page_says_what_it_does() {
    let env = TestEnv::new(0);
    let dir = tempfile::tempdir().unwrap();
    env.run(&["man", "--dir", dir.path().to_str().unwrap()])
        .expect(0);
    let mut pages = 0;
    for page in std::fs::read_dir(dir.path()).unwrap() {
        let path = page.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if *line == ".TP" {
                let (option, said) = (lines[i + 1], lines.get(i + 2).copied().unwrap_or(""));
                assert!(
                    !said.is_empty() && !said.starts_with('.'),
                    "{}: {option} has no description",
                    path.display()
                );
            }
        }
        // The text after the options keeps its lines (roff would fill them into one).
        if let Some(at) = lines.iter().position(|l| *l == ".SH EXTRA") {
            assert_eq!(lines[at + 1], ".nf", "{}", path.display());
        }
        pages += 1;
    }
    assert!(pages >= 9, "{pages} pages");
}

#[test]
fn env_example_shows_the_defaults_that_help_shows() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, out: &mut std::collections::BTreeMap<String, Option<String>>) {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env() {
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned());
                out.insert(var.to_string_lossy().into_owned(), default);
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut vars = std::collections::BTreeMap::new();
    walk(&redis_flusher::cli::Cli::command(), &mut vars);
    let example = include_str!("../../.env.example");
    let mut shown = std::collections::BTreeSet::new();
    for line in example.lines() {
        let Some((name, value)) = line.trim_start_matches("# ").split_once('=') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            continue;
        }
        shown.insert(name.to_owned());
        // A commented-out setting shows its default, where it has one.
        if let (true, Some(Some(default))) = (line.starts_with("# "), vars.get(name)) {
            assert_eq!(value, default, ".env.example shows {name}={value}");
        }
    }
    let missing: Vec<&String> = vars.keys().filter(|v| !shown.contains(*v)).collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}
