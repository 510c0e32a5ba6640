//! One test's namespace on the private servers ([`TestEnv`]: its own database, key prefix,
//! journal prefix and unknown hash, so tests run in parallel), the binary driven as an
//! operator would, and what a run left ([`Outcome`]).

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

use super::servers::{pg_connect, servers, signal};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One test's own database, key prefix, journal prefix and unknown hash.
pub struct TestEnv {
    pub n: usize,
    pub db: String,
    /// The pattern prefix, e.g. `t3_1234:hits:`.
    pub prefix: String,
    pub journal_prefix: String,
    pub unknown_key: String,
    pub redis_port: u16,
    pub pg_port: u16,
    pub workdir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh namespace on the shared private servers, with a `urls` table of `rows` codes
    /// `c1..c<rows>`, all at 0.
    pub fn new(rows: u32) -> TestEnv {
        let s = servers();
        Self::on(s.redis_port, s.pg_port, rows)
    }

    /// As [`TestEnv::new`], with a database in `encoding` (e.g. LATIN1).
    pub fn with_encoding(rows: u32, encoding: &str) -> TestEnv {
        let s = servers();
        Self::make(
            s.redis_port,
            s.pg_port,
            rows,
            &format!("ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
        )
    }

    /// A fresh namespace on the given servers (tests that stop or break a server own one).
    pub fn on(redis_port: u16, pg_port: u16, rows: u32) -> TestEnv {
        Self::make(redis_port, pg_port, rows, "")
    }

    fn make(redis_port: u16, pg_port: u16, rows: u32, db_options: &str) -> TestEnv {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("t{n}_{}", std::process::id());
        let mut admin = pg_connect(pg_port, "postgres").expect("connect to the test PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {tag} {db_options}"))
            .expect("create the test database");
        let env = TestEnv {
            n,
            db: tag.clone(),
            prefix: format!("{tag}:hits:"),
            journal_prefix: format!("{tag}:journal:"),
            unknown_key: format!("{tag}:unknown"),
            redis_port,
            pg_port,
            workdir: tempfile::tempdir().expect("temp dir"),
        };
        env.pg()
            .batch_execute(&format!(
                "CREATE TABLE urls (id serial PRIMARY KEY, \
                 short_code varchar(255) UNIQUE NOT NULL, original_url text NOT NULL DEFAULT '', \
                 access_count integer NOT NULL DEFAULT 0);
                 INSERT INTO urls (short_code) SELECT 'c' || g FROM generate_series(1, {rows}) g;"
            ))
            .expect("create urls");
        env
    }

    pub fn pg(&self) -> postgres::Client {
        pg_connect(self.pg_port, &self.db).expect("connect to the test database")
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test Redis")
    }

    /// The settings a run with `args` would have on this namespace (on its Redis unless `args`
    /// names a `--redis-url`), built in this process, for tests that drive the library's
    /// parts directly.
    pub fn config(&self, args: &[&str]) -> redis_flusher::config::Config {
        let redis_url = format!("redis://127.0.0.1:{}/", self.redis_port);
        let database_url = format!("postgres://postgres@127.0.0.1:{}/{}", self.pg_port, self.db);
        let pattern = format!("{}*", self.prefix);
        let mut argv = vec!["run"];
        if !args.contains(&"--redis-url") {
            argv.extend(["--redis-url", &redis_url]);
        }
        argv.extend([
            "--database-url",
            &database_url,
            "--pattern",
            &pattern,
            "--journal-prefix",
            &self.journal_prefix,
            "--unknown-key",
            &self.unknown_key,
        ]);
        argv.extend_from_slice(args);
        let run = redis_flusher::cli::run_args(argv).expect("parse the run's arguments");
        redis_flusher::config::Config::from_run_args(&run).expect("the run's settings")
    }

    pub fn key(&self, code: &str) -> String {
        format!("{}{code}", self.prefix)
    }

    /// The binary, pointed at this namespace through the environment the way an operator
    /// would, in a working directory of its own (so no stray `.env` is read).
    pub fn cmd(&self) -> Command {
        // REDIS_FLUSHER_TEST_BIN runs the suite against another build (a release, or an older
        // version, to see a test fail without its fix).
        let mut cmd = match std::env::var_os("REDIS_FLUSHER_TEST_BIN") {
            Some(bin) => Command::new(bin),
            None => Command::cargo_bin("redis-flusher").expect("the redis-flusher binary"),
        };
        // None of the suite's own variables (REDIS_FLUSHER_TEST_BIN, …) nor an operator's
        // settings reach the binary: a flusher warns about names it does not know.
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("REDIS_")
                || name.starts_with("DB_")
                || name == "DATABASE_URL"
                || name == "RUST_LOG"
            {
                cmd.env_remove(&var);
            }
        }
        cmd.current_dir(self.workdir.path()).envs(self.vars());
        cmd
    }

    /// The settings that point a run at this namespace, as an operator's environment holds
    /// them.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS_HOST", "127.0.0.1".into()),
            ("REDIS_PORT", self.redis_port.to_string()),
            ("DB_HOST", "127.0.0.1".into()),
            ("DB_PORT", self.pg_port.to_string()),
            ("DB_NAME", self.db.clone()),
            ("DB_USER", "postgres".into()),
            ("REDIS_FLUSHER_PATTERN", format!("{}*", self.prefix)),
            ("REDIS_FLUSHER_JOURNAL_PREFIX", self.journal_prefix.clone()),
            ("REDIS_FLUSHER_UNKNOWN_KEY", self.unknown_key.clone()),
            ("REDIS_FLUSHER_STATEMENT_TIMEOUT", "30".into()),
            ("REDIS_FLUSHER_CONNECT_TIMEOUT", "5".into()),
        ]
    }

    /// Runs `redis-flusher <args>`; returns (exit code or None if killed, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.output(cmd)
    }

    /// Runs a command built from [`TestEnv::cmd`] to its end.
    pub fn output(&self, mut cmd: Command) -> Outcome {
        let out = cmd.output().expect("run redis-flusher");
        self.wait_for_unlock();
        Outcome::of(&out)
    }

    pub fn set(&self, code: &str, value: &str) {
        redis::cmd("SET")
            .arg(self.key(code))
            .arg(value)
            .query::<()>(&mut self.redis())
            .expect("SET");
    }

    /// Waits until no live redis-flusher run holds the run lock of this namespace (the lease
    /// table has no row, or its holder's process has ended). Overlapping runs are safe, but a
    /// run started while another still holds the lock rightly exits "locked" and does
    /// nothing, which would make the next assertion race.
    pub fn wait_for_unlock(&self) {
        let mut pg = self.pg();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exists: bool = pg
                .query_one(
                    "SELECT to_regclass('redis_flusher_leases') IS NOT NULL",
                    &[],
                )
                .expect("look up the lease table")
                .get(0);
            let pids: Vec<i32> = if exists {
                pg.query("SELECT pid FROM redis_flusher_leases", &[])
                    .expect("read the lease table")
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            } else {
                Vec::new()
            };
            if pids
                .iter()
                .all(|&p| redis_flusher::postgres::process_gone(p))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a redis-flusher run kept the run lock for 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The deployment guide's ACL line, for a test namespace: only the commands and keys a flusher needs
    /// (the unknown-codes hash too, for `--keep-unknown`).
    pub fn least_acl(&self, user: &str, password: &str) -> Vec<String> {
        let unknown = format!("~{}", self.unknown_key);
        self.acl_with_keys(user, password, &[&unknown])
    }

    /// The deployment guide's ACL line with its key patterns for this namespace's pattern and journal
    /// prefix, and `more` patterns.
    pub fn acl_with_keys(&self, user: &str, password: &str, more: &[&str]) -> Vec<String> {
        let (counters, journals) = (
            format!("~{}*", self.prefix),
            format!("~{}*", self.journal_prefix),
        );
        let keys: Vec<&str> = [counters.as_str(), journals.as_str()]
            .into_iter()
            .chain(more.iter().copied())
            .collect();
        [user, "on", &format!(">{password}"), "resetkeys"]
            .into_iter()
            .chain(keys)
            .chain([
                "resetchannels",
                "-@all",
                "+ping",
                "+info",
                "+scan",
                "+evalsha",
                "+eval",
                "+script|load",
                "+mget",
                "+del",
                "+exists",
                "+hset",
                "+hdel",
                "+hexists",
                "+hgetall",
                "+hincrby",
                "+sadd",
                "+srem",
                "+smembers",
            ])
            .map(|s| s.to_string())
            .collect()
    }

    /// Waits until the ledger holds at least `rows` rows (a run is that far along).
    pub fn wait_for_ledger_rows(&self, rows: i64) {
        let mut pg = self.pg();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exists: bool = pg
                .query_one(
                    "SELECT to_regclass('redis_flusher_batches') IS NOT NULL",
                    &[],
                )
                .expect("look up the ledger")
                .get(0);
            let n: i64 = if exists {
                pg.query_one("SELECT count(*) FROM redis_flusher_batches", &[])
                    .expect("count ledger rows")
                    .get(0)
            } else {
                0
            };
            if n >= rows {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ledger did not reach {rows} rows in 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `set` on a Redis that asks for a password.
    pub fn set_with_password(&self, code: &str, value: &str, password: &str) {
        let mut con = redis::Client::open(format!(
            "redis://:{password}@127.0.0.1:{}/",
            self.redis_port
        ))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect with a password");
        redis::cmd("SET")
            .arg(self.key(code))
            .arg(value)
            .query::<()>(&mut con)
            .expect("SET");
    }

    /// Sets `<prefix>c1..c<n>` to `f(i)`, pipelined; returns the sum.
    pub fn set_many(&self, n: u32, f: impl Fn(u32) -> i64) -> i64 {
        let mut pipe = redis::pipe();
        let mut sum = 0;
        for i in 1..=n {
            pipe.cmd("SET")
                .arg(self.key(&format!("c{i}")))
                .arg(f(i))
                .ignore();
            sum += f(i);
        }
        pipe.query::<()>(&mut self.redis()).expect("SET many");
        sum
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.redis())
            .expect("GET")
    }

    /// Every key under a prefix (SCAN).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = scan_keys(&mut self.redis(), prefix);
        out.sort();
        out.dedup();
        out
    }

    /// Journal keys (the journal index, `<journal prefix>index`, is not one).
    pub fn journals(&self) -> Vec<String> {
        let index = self.index_key();
        self.keys(&self.journal_prefix)
            .into_iter()
            .filter(|k| *k != index)
            .collect()
    }

    pub fn index_key(&self) -> String {
        format!("{}index", self.journal_prefix)
    }

    /// Deletes the journal index, as an operator or a lost write could.
    pub fn lose_index(&self) {
        redis::cmd("DEL")
            .arg(self.index_key())
            .query::<()>(&mut self.redis())
            .expect("DEL the journal index");
    }

    /// A run killed right after its first claim: its journal waits for the next run.
    pub fn kill_after_first_claim(&self) {
        self.run_with(&["run"], &[("REDIS_FLUSHER_FAULT", "after_claim")])
            .expect_killed();
    }

    /// The members of the journal index.
    pub fn index(&self) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.index_key())
            .query(&mut self.redis())
            .expect("SMEMBERS");
        m.sort();
        m
    }

    pub fn count(&self, code: &str) -> i64 {
        let row = self
            .pg()
            .query_one(
                "SELECT access_count::int8 FROM urls WHERE short_code = $1",
                &[&code],
            )
            .expect("read a count");
        row.get(0)
    }

    pub fn total(&self) -> i64 {
        self.pg()
            .query_one("SELECT coalesce(sum(access_count), 0)::int8 FROM urls", &[])
            .expect("sum counts")
            .get(0)
    }

    /// What waits in the quarantine: (code, hits, error), by code.
    pub fn quarantine(&self) -> Vec<(String, i64, String)> {
        let mut pg = self.pg();
        let exists: bool = pg
            .query_one(
                "SELECT to_regclass('redis_flusher_quarantine') IS NOT NULL",
                &[],
            )
            .expect("look up the quarantine")
            .get(0);
        if !exists {
            return Vec::new();
        }
        // Bytes, decoded here: the database's encoding may not hold the code.
        pg.query(
            "SELECT code, hits::int8, error FROM redis_flusher_quarantine ORDER BY code",
            &[],
        )
        .expect("read the quarantine")
        .iter()
        .map(|r| {
            let code: Vec<u8> = r.get(0);
            (
                String::from_utf8_lossy(&code).into_owned(),
                r.get(1),
                r.get(2),
            )
        })
        .collect()
    }

    /// A trigger `refuse_<code>` on `urls` that raises `message` on any UPDATE of `code`'s
    /// row: a row Postgres refuses, for the quarantine (drop the trigger to let it through).
    pub fn refuse_updates_of(&self, code: &str, message: &str) {
        self.pg()
            .batch_execute(&format!(
                "CREATE FUNCTION refuse_{code}() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   IF NEW.short_code = '{code}' THEN RAISE EXCEPTION '{message}'; END IF;
                   RETURN NEW;
                 END $$;
                 CREATE TRIGGER refuse_{code} BEFORE UPDATE ON urls FOR EACH ROW \
                 EXECUTE FUNCTION refuse_{code}();"
            ))
            .expect("create the refusing trigger");
    }

    /// Ledger rows, and the transactions that wrote them (rows one transaction inserts share
    /// its `xmin`): fewer transactions than rows when batches were gathered.
    pub fn ledger_rows_and_transactions(&self) -> (i64, i64) {
        let row = self
            .pg()
            .query_one(
                "SELECT count(*), count(DISTINCT xmin::text) FROM redis_flusher_batches",
                &[],
            )
            .expect("count the ledger's rows and transactions");
        (row.get(0), row.get(1))
    }

    /// The hits of unknown codes that the ledger records as dropped or parked.
    pub fn ledger_unknown_hits(&self) -> i64 {
        self.pg()
            .query_one(
                "SELECT coalesce(sum(unknown_hits), 0)::int8 FROM redis_flusher_batches",
                &[],
            )
            .expect("sum the ledger's unknown hits")
            .get(0)
    }

    /// `INCRBY <prefix><code> n` for each pair, pipelined.
    pub fn incr_many<'a>(&self, incrs: impl IntoIterator<Item = (&'a str, i64)>) {
        let mut pipe = redis::pipe();
        for (code, n) in incrs {
            pipe.cmd("INCRBY").arg(self.key(code)).arg(n).ignore();
        }
        pipe.query::<()>(&mut self.redis()).expect("INCRBY many");
    }

    pub fn ledger_rows(&self) -> i64 {
        self.pg()
            .query_one("SELECT count(*) FROM redis_flusher_batches", &[])
            .expect("count ledger rows")
            .get(0)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Keep the evidence of a failed test; clean up after a passing one.
        if std::thread::panicking() {
            eprintln!(
                "test state kept: database {} on 127.0.0.1:{}, keys {}* / {}* on 127.0.0.1:{}",
                self.db, self.pg_port, self.prefix, self.journal_prefix, self.redis_port
            );
            return;
        }
        if let Ok(mut admin) = pg_connect(self.pg_port, "postgres") {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        }
        if let Ok(mut con) = redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        {
            let tag = self.prefix.split(':').next().unwrap_or_default().to_owned();
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(format!("{tag}:*"))
                .query(&mut con)
                .unwrap_or_default();
            for k in keys {
                let _ = redis::cmd("DEL").arg(k).query::<()>(&mut con);
            }
        }
    }
}

/// Every key under `prefix` on one server (SCAN; a key may come twice), bytes that are not
/// UTF-8 shown lossily.
pub fn scan_keys(con: &mut redis::Connection, prefix: &str) -> Vec<String> {
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<Vec<u8>>(con)
        .expect("SCAN")
        .map(|k| String::from_utf8_lossy(&k.expect("SCAN key")).into_owned())
        .collect()
}

/// A random generator for a test that draws its moves at random: seeded from
/// `REDIS_FLUSHER_SEED` when set, else at random, the seed printed so that a failure can be
/// repeated.
pub fn seeded_rng() -> (u64, fastrand::Rng) {
    let seed = std::env::var("REDIS_FLUSHER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (REDIS_FLUSHER_SEED={seed} repeats this run)");
    (seed, fastrand::Rng::with_seed(seed))
}

/// Writer threads INCRing random codes (1..=known_codes known, then 100 without a row) until
/// `stop`; each returns the (known, unknown) INCRs it made.
pub fn start_writers(
    env: &TestEnv,
    threads: u64,
    known_codes: u64,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(i64, i64)>> {
    use std::sync::atomic::Ordering;
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let mut con = env.redis();
            let prefix = env.prefix.clone();
            let mut rng = fastrand::Rng::with_seed(t);
            std::thread::spawn(move || {
                let (mut known, mut unknown) = (0i64, 0i64);
                while !stop.load(Ordering::Relaxed) {
                    let n = rng.u64(1..=known_codes + 100);
                    redis::cmd("INCR")
                        .arg(format!("{prefix}c{n}"))
                        .query::<i64>(&mut con)
                        .expect("INCR");
                    if n <= known_codes {
                        known += 1;
                    } else {
                        unknown += 1;
                    }
                }
                (known, unknown)
            })
        })
        .collect()
}

/// What [`overlapping_runs_under_load`] saw.
pub struct Overlap {
    /// Runs that took the lock, and runs that found it taken.
    pub ran: u32,
    pub locked: u32,
    /// INCRs the app made for known and for unknown codes.
    pub known: i64,
    pub unknown: i64,
}

/// `rounds` rounds of four runs started within 100 ms of each other, while two clients INCR
/// codes `c1..c3000` (and 100 unknown ones), then one run after the writers stopped. Every run
/// must exit 0: flushed, or found the lock taken. `env_vars` go to every run.
pub fn overlapping_runs_under_load(
    env: &TestEnv,
    rounds: u32,
    env_vars: &[(&str, &str)],
) -> Overlap {
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const ARGS: [&str; 5] = ["run", "--batch-size", "300", "--claim-size", "50"];

    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(env, 2, 3000, &stop);
    let (mut ran, mut locked) = (0, 0);
    for round in 0..rounds {
        // Started within 100 ms of each other: some meet the lock, some find it free again.
        let runs: Vec<Child> = (0..4)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..=33)));
                let mut cmd = env.cmd();
                cmd.args(ARGS)
                    .arg("--json")
                    .envs(env_vars.iter().copied())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().expect("start redis-flusher")
            })
            .collect();
        for run in runs {
            let (out, _) = finish_within(run, Duration::from_secs(60));
            out.expect(0);
            match out.json()["status"].as_str() {
                Some("ok") => ran += 1,
                Some("locked") => locked += 1,
                other => panic!("round {round}: status {other:?}\n{}", out.stderr),
            }
        }
        env.wait_for_unlock();
    }
    stop.store(true, Ordering::Relaxed);
    let (mut known, mut unknown) = (0, 0);
    for w in writers {
        let (k, u) = w.join().expect("a writer panicked");
        known += k;
        unknown += u;
    }
    env.run_with(&ARGS, env_vars).expect(0);
    eprintln!(
        "{} runs: {ran} flushed, {locked} found the lock taken; {known} known INCRs, \
         {unknown} unknown",
        rounds * 4
    );
    Overlap {
        ran,
        locked,
        known,
        unknown,
    }
}

/// Waits for `child` (a run started with [`TestEnv::cmd`]) to end, at most `limit`; returns
/// its outcome and how long it took. Past the limit, it is killed and the test fails.
pub fn finish_within(child: Child, limit: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            signal(pid, libc::SIGKILL);
            let out = waiter.join().expect("join the waiter").expect("wait");
            panic!(
                "the run did not end within {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().expect("join the waiter").expect("wait");
    (Outcome::of(&out), started.elapsed())
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn of(out: &std::process::Output) -> Outcome {
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that the process was killed by a signal (the fault hook).
    pub fn expect_killed(&self) -> &Self {
        assert_eq!(
            self.code, None,
            "expected a kill\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}
