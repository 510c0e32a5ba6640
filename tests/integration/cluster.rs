//! Redis Cluster: private clusters made by `redis-cli --cluster create`, the same exact totals
//! as on one Redis, through a kill and a failover.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{servers, start_cluster, TestEnv};

fn cluster_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_CLUSTER", "true".into()),
        ("REDIS_URL", url.to_owned()),
    ]
}

fn run(env: &TestEnv, url: &str, args: &[&str]) -> crate::common::Outcome {
    let vars = cluster_env(url);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.run_with(args, &pairs)
}

#[test]
fn three_masters_and_100k_keys_over_every_slot_are_flushed_exactly() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 100_000);
    let expected = cluster.set_many(&env.prefix, 100_000, |i| i64::from(i % 7 + 1));
    let started = Instant::now();
    let out = run(&env, &cluster.url(), &["run", "--json"]);
    out.expect(0);
    eprintln!("100,000 keys over 3 masters in {:?}", started.elapsed());
    let j = out.json();
    assert_eq!(j["keys"], 100_000);
    assert_eq!(env.total(), expected);
    assert!(cluster.keys(&env.prefix).is_empty(), "counters left");
    assert!(
        cluster.journals(&env.journal_prefix).is_empty(),
        "journals left"
    );
    // Every master was scanned: each owned some of the keys.
    let log = out.stderr;
    assert!(log.contains("Redis Cluster masters: "), "{log}");
    // status and a dry run see the cluster too.
    cluster.set_many(&env.prefix, 1000, |_| 2);
    let status = run(&env, &cluster.url(), &["status", "--json"]);
    status.expect(0);
    assert_eq!(status.json()["waiting"]["keys"], 1000);
    assert_eq!(status.json()["waiting"]["hits"], 2000);
    let dry = run(&env, &cluster.url(), &["run", "--dry-run", "--json"]);
    dry.expect(0);
    assert_eq!(dry.json()["hits"], 2000);
    run(&env, &cluster.url(), &["run"]).expect(0);
    assert_eq!(env.total(), expected + 2000);
}

#[test]
fn a_kill_after_a_claim_on_a_cluster_is_recovered_exactly() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 5000);
    let expected = cluster.set_many(&env.prefix, 5000, |i| i64::from(i % 3 + 1));
    let vars = cluster_env(&cluster.url());
    let mut pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.push(("REDIS_FLUSHER_FAULT", "after_claim:3"));
    env.run_with(
        &["run", "--batch-size", "1000", "--claim-size", "100"],
        &pairs,
    )
    .expect_killed();
    assert!(!cluster.journals(&env.journal_prefix).is_empty());
    let out = run(&env, &cluster.url(), &["run", "--json"]);
    out.expect(0);
    assert_eq!(out.json()["recovered_batches"], 1);
    assert_eq!(env.total(), expected);
    assert!(cluster.keys(&env.prefix).is_empty());
    assert!(cluster.journals(&env.journal_prefix).is_empty());
}

#[test]
fn a_failover_during_a_flush_loses_nothing_after_a_rerun() {
    let cluster = start_cluster(3, 1);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 60_000);
    let expected = cluster.set_many(&env.prefix, 60_000, |i| i64::from(i % 5 + 1));
    let mut cmd = env.cmd();
    cmd.args(["run", "--batch-size", "500", "--claim-size", "100"])
        .env("REDIS_CLUSTER", "true")
        .env("REDIS_URL", cluster.url())
        .env("REDIS_FLUSHER_COMMAND_TIMEOUT", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start redis-flusher");
    env.wait_for_ledger_rows(1);
    // A replica takes over from its master, mid-flush.
    let masters = cluster.masters();
    let replica = cluster
        .nodes
        .iter()
        .find(|n| !masters.contains_key(&n.port))
        .expect("a replica");
    let answer: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut cluster.con(replica.port))
        .expect("CLUSTER FAILOVER");
    assert_eq!(answer, "OK");
    let out = child.wait_with_output().expect("wait");
    eprintln!(
        "the run during the failover exited {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    // The replica is a master now, and the cluster is whole again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.masters().contains_key(&replica.port) {
        assert!(Instant::now() < deadline, "the failover did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_until_ok(6);
    env.wait_for_unlock();
    let out = run(&env, &cluster.url(), &["run"]);
    out.expect(0);
    assert_eq!(env.total(), expected);
    assert!(cluster.keys(&env.prefix).is_empty());
    assert!(cluster.journals(&env.journal_prefix).is_empty());
}

#[test]
fn cluster_settings_that_cannot_work_are_refused() {
    let env = TestEnv::new(1);
    let out = env.run_with(&["run", "--keep-unknown"], &[("REDIS_CLUSTER", "true")]);
    out.expect(2);
    assert!(out
        .stderr
        .contains("`--keep-unknown` is not supported on a Redis Cluster"));
    // Without --redis-cluster, a comma is part of the one URL (a password may hold one).
    let out = env.run_with(&["run"], &[("REDIS_URL", "redis://a:1,redis://b:2")]);
    out.expect(2);
    assert!(
        out.stderr.contains("is not a valid Redis URL"),
        "{}",
        out.stderr
    );
    // A plain Redis is not a cluster: said at connect, as a setting to change (exit 2, not a
    // server to wait for).
    let out = env.run_with(&["run"], &[("REDIS_CLUSTER", "true")]);
    out.expect(2);
    assert!(
        out.stderr.contains("unset `REDIS_CLUSTER`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_run_older_than_the_fences_can_claim_nothing() {
    use redis_flusher::redis::RedisSource;

    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 10);
    cluster.set_many(&env.prefix, 10, |_| 1);
    let cfg = env.config(&["--redis-cluster", "--redis-url", &cluster.url()]);
    let keys: Vec<Vec<u8>> = (1..=10)
        .map(|i| format!("{}c{i}", env.prefix).into_bytes())
        .collect();

    // An old run (token 100) claims half; a newer run (token 200) raises the fences.
    let connect = || RedisSource::connect(&cfg.redis, &cfg.flush.source).expect("connect");
    let mut old = connect();
    old.raise_fences(100).expect("fences");
    let taken = old
        .claim("old-0", "c0", true, &keys[..5])
        .expect("claim before the fence");
    assert_eq!(taken.entries.len(), 5);
    let mut new = connect();
    new.raise_fences(200).expect("fences");
    // The old run can take nothing more, in any slot, not even into a new sub-journal.
    let refused = old.claim("old-0", "c1", false, &keys[5..]);
    let err = format!(
        "{:#}",
        refused.expect_err("an older run claimed past the fence")
    );
    assert!(err.contains("FENCED"), "{err}");
    assert_eq!(
        cluster.keys(&env.prefix).len(),
        5,
        "the refused keys stay in Redis"
    );
    // The newer run recovers what the old one took, and finds all of it.
    let journals = new.journals(true).expect("journals");
    let ids: Vec<&str> = journals.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["old-0"]);
    let chunks = new.seal(&journals[0]).expect("seal");
    assert_eq!(
        chunks.expect("the journal is this run's").chunks.len(),
        taken.fields.len()
    );
}

#[test]
fn the_readme_acl_with_its_cluster_additions_is_enough() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 2000);
    let expected = cluster.set_many(&env.prefix, 2000, |i| i64::from(i % 4 + 1));
    let user = format!("flusher_{}", env.n);
    // ACLs are per node in a cluster: set on each.
    for n in &cluster.nodes {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(env.least_acl(&user, "acl-pw"))
            .arg(&["+cluster|slots", "+set", "+get"])
            .query::<()>(&mut cluster.con(n.port))
            .expect("ACL SETUSER");
    }
    let url = cluster.url();
    let creds = [
        ("REDIS_CLUSTER", "true"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_USERNAME", user.as_str()),
        ("REDIS_PASSWORD", "acl-pw"),
    ];
    let mut killing = creds.to_vec();
    killing.push(("REDIS_FLUSHER_FAULT", "after_claim:2"));
    env.run_with(&["run", "--batch-size", "500"], &killing)
        .expect_killed();
    env.run_with(&["run", "--batch-size", "500"], &creds)
        .expect(0);
    assert_eq!(env.total(), expected);
    assert!(cluster.keys(&env.prefix).is_empty());
    assert!(cluster.journals(&env.journal_prefix).is_empty());
}

#[test]
fn a_cluster_over_tls_with_a_private_ca() {
    let pki = crate::common::make_pki();
    let cluster = crate::common::start_cluster_with(3, 0, Some(&pki));
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 3000);
    let expected = cluster.set_many(&env.prefix, 3000, |i| i64::from(i % 4 + 1));
    let url = format!("rediss://localhost:{}", cluster.tls_ports[0]);
    let ca = pki.ca.to_str().expect("UTF-8 path");
    let other = pki.other_ca.to_str().expect("UTF-8 path");
    let vars = |ca: &str| {
        vec![
            ("REDIS_CLUSTER", "true".to_owned()),
            ("REDIS_URL", url.clone()),
            ("REDIS_CA_FILE", ca.to_owned()),
        ]
    };
    let pairs = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    let wrong = pairs(&vars(other));
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run_with(&["run"], &wrong);
    out.expect(2); // a certificate a person must fix
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);
    assert_eq!(cluster.keys(&env.prefix).len(), 3000);
    let right = vars(ca);
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = env.run_with(&["run", "--json"], &right);
    out.expect(0);
    assert_eq!(out.json()["keys"], 3000);
    assert_eq!(env.total(), expected);
    assert!(cluster.keys(&env.prefix).is_empty());
    assert!(cluster.journals(&env.journal_prefix).is_empty());
}

#[test]
fn kills_around_the_commit_on_a_cluster_count_nothing_twice() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 3000);
    let vars = cluster_env(&cluster.url());
    let mut expected = 0;
    // (where the first run dies, batches it committed, the fewest batches the rerun must
    // apply: at most two more were claimed meanwhile, one waiting, one being claimed)
    for (round, (point, committed, recovered)) in [
        ("before_commit", 0, 1),
        ("after_commit", 1, 0),
        ("after_commit:2", 2, 0),
    ]
    .into_iter()
    .enumerate()
    {
        expected += cluster.set_many(&env.prefix, 3000, |i| i64::from(i % 3 + 1));
        let mut pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.push(("REDIS_FLUSHER_FAULT", point));
        // The first run creates the ledger.
        let before = if round == 0 { 0 } else { env.ledger_rows() };
        env.run_with(&["run", "--batch-size", "1000"], &pairs)
            .expect_killed();
        assert_eq!(
            env.ledger_rows() - before,
            committed,
            "batches committed before {point}"
        );
        // The dead run's sub-journals are spread over the masters.
        assert!(!cluster.journals(&env.journal_prefix).is_empty(), "{point}");
        let out = run(
            &env,
            &cluster.url(),
            &["run", "--json", "--batch-size", "1000"],
        );
        out.expect(0);
        let applied = out.json()["recovered_batches"].as_i64().expect("a count");
        assert!(
            (recovered..=recovered + 2).contains(&applied),
            "{point}: {applied} batches recovered"
        );
        assert_eq!(env.total(), expected, "after a kill at {point}");
        assert!(cluster.keys(&env.prefix).is_empty(), "{point}");
        assert!(cluster.journals(&env.journal_prefix).is_empty(), "{point}");
    }
}
