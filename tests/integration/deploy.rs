//! Where it really runs: behind PgBouncer (each pooling mode), over a Unix socket, beside Redis
//! Sentinel, pointed at a replica by mistake. The components in between are the real ones,
//! started privately (`tests/common/`).

use std::time::{Duration, Instant};

use crate::common::{overlapping_runs_under_load, servers, start_pgbouncer, TestEnv};

/// The run's environment with Postgres behind the pooler on `port`.
/// The first row of a simple-protocol answer.
fn first_row(messages: &[postgres::SimpleQueryMessage]) -> &postgres::SimpleQueryRow {
    messages
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row")
}

fn through(port: &str) -> [(&str, &str); 1] {
    [("DB_PORT", port)]
}

#[test]
fn overlapping_runs_through_pgbouncer_in_transaction_mode_count_everything_once() {
    let env = TestEnv::new(3000);
    let bouncer = start_pgbouncer(env.pg_port, "transaction", 3);
    let port = bouncer.port.to_string();
    // Every run exits 0 (none fails on a statement), and every INCR is counted once.
    let o = overlapping_runs_under_load(&env, 8, &through(&port));
    assert!(o.ran >= 8, "every round has one run that takes the lock");
    assert!(o.known > 3000, "the writers made only {} INCRs", o.known);
    assert_eq!(env.total(), o.known);
    assert_eq!(env.ledger_unknown_hits(), o.unknown);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());

    // Nothing of ours outlives our transactions on the pooled server connections: three
    // clients in a transaction at once hold all three, and each looks at its own.
    let mut clients: Vec<postgres::Client> = (0..3)
        .map(|_| {
            crate::common::pg_connect(bouncer.port, &env.db).expect("connect through pgbouncer")
        })
        .collect();
    for c in clients.iter_mut() {
        c.batch_execute("BEGIN").expect("BEGIN through pgbouncer");
    }
    let mut seen = Vec::new();
    for c in clients.iter_mut() {
        // The simple protocol: a query of our own would be a prepared statement there.
        let rows = c
            .simple_query(
                "SELECT pg_backend_pid(), current_setting('enable_hashjoin'), \
                 current_setting('enable_mergejoin'), current_setting('statement_timeout'), \
                 current_setting('lock_timeout'), current_setting('synchronous_commit'), \
                 (SELECT count(*) FROM pg_prepared_statements)",
            )
            .expect("read the server connection's settings");
        let row = first_row(&rows);
        let col = |i| row.get(i).expect("a value").to_owned();
        let pid = col(0);
        let settings: Vec<String> = (1..6).map(col).collect();
        let prepared = col(6);
        // The private server runs with synchronous_commit off; ours never stays on.
        assert_eq!(
            settings,
            ["on", "on", "0", "0", "off"],
            "server connection {pid}"
        );
        assert_eq!(
            prepared, "0",
            "prepared statements left on server connection {pid}"
        );
        seen.push(pid);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 3, "three server connections looked at");
    let advisory: i64 = env
        .pg()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(advisory, 0, "advisory locks left on the server");
}

/// A backlog's transactions gather batches in a temporary table, whose COPY the client
/// prepares by name: through transaction pooling, both live and die inside the transaction,
/// and the pooled server connections keep neither.
#[test]
fn gathered_batches_through_pgbouncer_in_transaction_mode_leave_nothing_behind() {
    let env = TestEnv::new(2000);
    let bouncer = start_pgbouncer(env.pg_port, "transaction", 2);
    let port = bouncer.port.to_string();
    let knob = ("REDIS_FLUSHER_TEST_BATCH_KEYS", "50");
    let mut expected = 0;
    for round in 0..3 {
        expected += env.set_many(2000, |i| i64::from(i % 5 + round + 1));
        env.run_with(&["run", "--batch-size", "400"], &[through(&port)[0], knob])
            .expect(0);
        assert_eq!(env.total(), expected, "round {round}");
    }
    let (rows, transactions) = env.ledger_rows_and_transactions();
    assert!(
        transactions < rows,
        "{rows} batches in {transactions} transactions"
    );
    let mut clients: Vec<postgres::Client> = (0..2)
        .map(|_| {
            crate::common::pg_connect(bouncer.port, &env.db).expect("connect through pgbouncer")
        })
        .collect();
    for c in clients.iter_mut() {
        c.batch_execute("BEGIN").expect("BEGIN through pgbouncer");
    }
    for c in clients.iter_mut() {
        let rows = c
            .simple_query(
                "SELECT (SELECT count(*) FROM pg_prepared_statements), \
                 (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())",
            )
            .expect("read the server connection's state");
        let row = first_row(&rows);
        assert_eq!(
            (row.get(0), row.get(1)),
            (Some("0"), Some("0")),
            "prepared statements, temporary tables left"
        );
    }
}

#[test]
fn a_killed_runs_lock_expires_and_the_next_run_after_it_flushes() {
    let env = TestEnv::new(2000);
    let bouncer = start_pgbouncer(env.pg_port, "transaction", 2);
    let port = bouncer.port.to_string();
    let expected = env.set_many(2000, |i| i64::from(i % 5 + 1));
    let mut killing = through(&port).to_vec();
    killing.push(("REDIS_FLUSHER_FAULT", "after_claim:3"));
    env.run_with(
        &["run", "--batch-size", "400", "--claim-size", "100"],
        &killing,
    )
    .expect_killed();
    // As if the killed run had run on another machine: no one here can tell it is gone, so
    // only its lease's expiry frees the lock.
    env.pg()
        .batch_execute(
            "UPDATE redis_flusher_leases SET machine = 'another-machine', \
             expires_at = now() + interval '3 s'",
        )
        .unwrap();
    let out = env.run_with(&["run", "--json"], &through(&port));
    out.expect(0);
    assert_eq!(out.json()["status"], "locked");
    assert!(
        out.stderr
            .contains("another redis-flusher run holds the lock"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), 0, "the killed run committed nothing");
    let expiry = Instant::now() + Duration::from_secs(3);
    while Instant::now() < expiry {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = env.run_with(&["run", "--json"], &through(&port));
    out.expect(0);
    assert_eq!(out.json()["status"], "ok");
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
    assert!(env.keys(&env.prefix).is_empty());
}

#[test]
fn a_run_whose_lock_is_taken_over_stops_claiming() {
    let env = TestEnv::new(100_000);
    let expected = env.set_many(100_000, |i| i64::from(i % 3 + 1));
    let mut cmd = env.cmd();
    cmd.args([
        "run",
        "--batch-size",
        "100",
        "--claim-size",
        "50",
        "--lock-ttl",
        "4",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    env.wait_for_ledger_rows(1);
    // Another run takes the lock over (as one would once this one's lease had expired).
    env.pg()
        .batch_execute("UPDATE redis_flusher_leases SET holder = 'run-elsewhere'")
        .unwrap();
    let (out, took) = crate::common::finish_within(child, Duration::from_secs(20));
    out.expect(1);
    assert!(
        out.stderr.contains("another run took over the run lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("stopped by another run taking over the run lock"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(env.total() < expected, "it stopped before the end");
    assert!(env.journals().is_empty(), "what it claimed, it applied");
    env.pg()
        .batch_execute("DELETE FROM redis_flusher_leases")
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected);
}

#[test]
fn session_mode_works_and_statement_mode_is_refused_with_advice() {
    let env = TestEnv::new(500);
    let expected = env.set_many(500, |_| 2);
    let session = start_pgbouncer(env.pg_port, "session", 2);
    env.run_with(
        &["run", "--batch-size", "100"],
        &through(&session.port.to_string()),
    )
    .expect(0);
    assert_eq!(env.total(), expected);

    let more = env.set_many(500, |_| 1);
    let statement = start_pgbouncer(env.pg_port, "statement", 2);
    let out = env.run_with(&["run"], &through(&statement.port.to_string()));
    out.expect(2);
    assert!(
        out.stderr
            .contains("a pooler in statement pooling mode does that"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pool_mode = transaction"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 500, "nothing claimed");
    assert!(env.journals().is_empty());
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), expected + more);
}

#[test]
fn postgres_over_its_unix_socket_in_every_spelling() {
    let env = TestEnv::new(10);
    let dir = servers().pg.dir.display().to_string();
    let (port, db) = (env.pg_port.to_string(), env.db.clone());
    let encoded = dir.replace('/', "%2F");
    let forms: Vec<Vec<(&str, String)>> = vec![
        vec![("DB_HOST", dir.clone())],
        // libpq ignores sslmode over a socket; so do we.
        vec![("DB_HOST", dir.clone()), ("DB_SSLMODE", "require".into())],
        vec![(
            "DATABASE_URL",
            format!("postgresql:///{db}?host={dir}&port={port}&user=postgres"),
        )],
        vec![(
            "DATABASE_URL",
            format!("postgresql://postgres@/{db}?host={dir}&port={port}"),
        )],
        vec![(
            "DATABASE_URL",
            format!("postgresql://postgres@{encoded}:{port}/{db}?sslmode=prefer"),
        )],
        vec![(
            "DATABASE_URL",
            format!("host={dir} port={port} dbname={db} user=postgres"),
        )],
    ];
    for (i, form) in forms.iter().enumerate() {
        env.set_many(10, |_| 1);
        let vars: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = env.run_with(&["run"], &vars);
        out.expect(0);
        assert!(
            out.stderr
                .contains(&format!("at postgres@{dir}:{port}/{db}")),
            "{form:?}: {}",
            out.stderr
        );
        assert_eq!(env.total(), 10 * (i as i64 + 1), "{form:?}");
    }
}

#[test]
fn peer_authentication_as_the_os_user_over_the_socket() {
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new(10);
    let pg = &servers().pg;
    // As root, the tests run PostgreSQL as `postgres`: that is the OS user to be, and the
    // role peer authentication maps it to. Otherwise the OS user this runs as, given a role.
    let (os_user, ids) = match pg.ids {
        Some(ids) => ("postgres".to_owned(), Some(ids)),
        None => {
            let me = String::from_utf8(
                std::process::Command::new("id")
                    .arg("-un")
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim()
            .to_owned();
            env.pg()
                .batch_execute(&format!("CREATE ROLE \"{me}\" LOGIN SUPERUSER"))
                .ok();
            (me, None)
        }
    };
    pg.hba_first(&format!("local {} all peer", env.db));
    env.set_many(10, |_| 3);
    let url = format!(
        "postgresql:///{}?host={}&port={}",
        env.db,
        pg.dir.display(),
        env.pg_port
    );
    let mut cmd = env.cmd();
    cmd.env_remove("DB_USER")
        .env("DATABASE_URL", &url)
        .arg("run")
        .current_dir(&pg.dir);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    let out = env.output(cmd);
    out.expect(0);
    assert!(
        out.stderr
            .contains(&format!("at {os_user}@{}", pg.dir.display())),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), 30);

    // Peer means the OS user: another role over the same socket is refused.
    env.set_many(10, |_| 1);
    let out = env.run_with(
        &["run"],
        &[("DATABASE_URL", &url), ("DB_USER", "nobody_in_particular")],
    );
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("Peer authentication failed"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 10, "nothing claimed");
}

/// Sets `<prefix>c1..c<n>` to `f(i)` on `con`; returns the sum.
fn set_on(con: &mut redis::Connection, prefix: &str, n: u32, f: impl Fn(u32) -> i64) -> i64 {
    let mut pipe = redis::pipe();
    let mut sum = 0;
    for i in 1..=n {
        pipe.cmd("SET")
            .arg(format!("{prefix}c{i}"))
            .arg(f(i))
            .ignore();
        sum += f(i);
    }
    pipe.query::<()>(con).expect("SET on the master");
    sum
}

#[test]
fn redis_behind_sentinel_flushes_exactly_across_a_failover() {
    let s = crate::common::start_sentinels();
    let env = TestEnv::on(s.master.port, servers().pg_port, 3000);
    let list = s.list();
    let via = [("REDIS_SENTINELS", list.as_str())];
    let mut expected = set_on(&mut s.master_con(), &env.prefix, 3000, |i| {
        i64::from(i % 4 + 1)
    });
    let out = env.run_with(&["run", "--batch-size", "500"], &via);
    out.expect(0);
    assert!(
        out.stderr
            .contains("from Redis at master `mymaster` via sentinels"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), expected);

    let new = s.failover();
    assert_ne!(new, s.master.port);
    expected += set_on(&mut s.master_con(), &env.prefix, 3000, |_| 2);
    env.run_with(&["run", "--batch-size", "500"], &via)
        .expect(0);
    assert_eq!(env.total(), expected);
    let left = crate::common::scan_keys(&mut s.master_con(), &env.prefix);
    assert!(left.is_empty(), "{left:?}");
    assert!(
        crate::common::scan_keys(&mut s.master_con(), &env.journal_prefix)
            .iter()
            .all(|k| k.ends_with("index"))
    );
}

#[test]
fn a_failover_mid_run_fails_the_run_and_the_next_one_finishes_exactly() {
    let s = crate::common::start_sentinels();
    let env = TestEnv::on(s.master.port, servers().pg_port, 60_000);
    let list = s.list();
    let via = [
        ("REDIS_SENTINELS", list.as_str()),
        // Every committed batch's claims are on the replica first, so a failover loses
        // nothing that Postgres has.
        ("REDIS_FLUSHER_WAIT_REPLICAS", "1"),
        ("REDIS_FLUSHER_COMMAND_TIMEOUT", "3"),
    ];
    let expected = set_on(&mut s.master_con(), &env.prefix, 60_000, |i| {
        i64::from(i % 3 + 1)
    });
    let mut cmd = env.cmd();
    cmd.args(["run", "--batch-size", "200", "--claim-size", "50"])
        .envs(via)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    env.wait_for_ledger_rows(2);
    s.failover();
    let (out, _) = crate::common::finish_within(child, Duration::from_secs(60));
    out.expect(1);
    assert!(env.total() < expected, "the run was stopped part-way");
    env.wait_for_unlock();
    let out = env.run_with(&["run", "--json"], &via);
    out.expect(0);
    assert_eq!(env.total(), expected);
    assert!(crate::common::scan_keys(&mut s.master_con(), &env.prefix).is_empty());
}

#[test]
fn a_replica_by_mistake_is_refused_before_anything_is_claimed() {
    let s = crate::common::start_sentinels();
    let env = TestEnv::on(s.master.port, servers().pg_port, 10);
    set_on(&mut s.master_con(), &env.prefix, 10, |_| 1);
    let replica = s.replica.port.to_string();
    let out = env.run_with(&["run"], &[("REDIS_PORT", &replica)]);
    out.expect(2);
    assert!(
        out.stderr.contains(&format!(
            "Redis at 127.0.0.1:{replica} db 0 is a replica (of 127.0.0.1:{}), and claims must \
             be made on the master",
            s.master.port
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        crate::common::scan_keys(&mut s.master_con(), &env.prefix).len(),
        10,
        "nothing claimed"
    );
    assert_eq!(env.total(), 0);
}

#[test]
fn unconfirmed_claims_are_not_committed() {
    let s = crate::common::start_sentinels();
    let env = TestEnv::on(s.master.port, servers().pg_port, 500);
    let expected = set_on(&mut s.master_con(), &env.prefix, 500, |_| 3);
    // Two replicas asked for, one there: the batch waits in its journal.
    let out = env.run_with(
        &["run", "--redis-wait-replicas", "2"],
        &[("REDIS_FLUSHER_COMMAND_TIMEOUT", "2")],
    );
    out.expect(1);
    assert!(
        out.stderr
            .contains("only 1 of the 2 replicas `--redis-wait-replicas` asks for confirmed"),
        "{}",
        out.stderr
    );
    assert_eq!(env.total(), 0, "nothing committed");
    assert_eq!(env.journals().len(), 1);
    env.run_with(&["run", "--redis-wait-replicas", "1"], &[])
        .expect(0);
    assert_eq!(env.total(), expected);
    assert!(env.journals().is_empty());
}

#[test]
fn a_postgres_standby_or_a_read_only_database_is_refused_before_anything_is_claimed() {
    let env = TestEnv::new(10);
    env.set_many(10, |_| 1);
    let standby = crate::common::start_standby(&servers().pg);
    let out = env.run_with(&["run"], &[("DB_PORT", &standby.port.to_string())]);
    out.expect(2);
    assert!(
        out.stderr
            .contains("is a hot standby (a read-only replica): point `DATABASE_URL`"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 10, "nothing claimed");

    let admin = || crate::common::pg_connect(env.pg_port, "postgres").unwrap();
    admin()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            env.db
        ))
        .unwrap();
    let out = env.run(&["run"]);
    out.expect(2);
    assert!(
        out.stderr
            .contains("makes transactions read-only by default"),
        "{}",
        out.stderr
    );
    assert_eq!(env.keys(&env.prefix).len(), 10, "nothing claimed");
    admin()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = off",
            env.db
        ))
        .unwrap();
    env.run(&["run"]).expect(0);
    assert_eq!(env.total(), 10);
}
