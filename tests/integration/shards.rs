//! Shards (`--shard INDEX/COUNT`): several processes split one keyspace by hash slot, on one
//! Redis and on a Cluster, under live INCR traffic, with random kills and changes of COUNT
//! between rounds; then one run without shards. Every total exact, nothing doubled.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{finish_within, seeded_rng, servers, start_cluster, RedisCluster, TestEnv};

const CODES: u64 = 3000;

/// Where the counters live: one Redis, or a cluster's masters (a key goes to its slot's).
enum Target {
    One,
    Cluster(RedisCluster),
}

impl Target {
    fn vars(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::One => Vec::new(),
            Target::Cluster(c) => vec![("REDIS_CLUSTER", "true".into()), ("REDIS_URL", c.url())],
        }
    }

    /// Port of the server that holds each slot.
    fn owners(&self, env: &TestEnv) -> Vec<u16> {
        match self {
            Target::One => vec![env.redis_port; 16384],
            Target::Cluster(c) => c.owners(),
        }
    }

    fn keys(&self, env: &TestEnv) -> Vec<String> {
        match self {
            Target::One => env.keys(&env.prefix),
            Target::Cluster(c) => c.keys(&env.prefix),
        }
    }

    fn journals(&self, env: &TestEnv) -> Vec<String> {
        match self {
            Target::One => env.journals(),
            Target::Cluster(c) => c.journals(&env.journal_prefix),
        }
    }
}

/// Two clients INCRing random codes (each to its slot's server) until `stop`; the INCRs made.
fn writers(
    env: &TestEnv,
    target: &Target,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<i64>> {
    let owners = target.owners(env);
    (0..2u64)
        .map(|t| {
            let stop = stop.clone();
            let owners = owners.clone();
            let prefix = env.prefix.clone();
            std::thread::spawn(move || {
                let mut cons: BTreeMap<u16, redis::Connection> = BTreeMap::new();
                let mut rng = fastrand::Rng::with_seed(t);
                let mut made = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}c{}", rng.u64(1..=CODES));
                    let port = owners[redis_flusher::redis::slot(key.as_bytes()) as usize];
                    let con = cons.entry(port).or_insert_with(|| {
                        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                            .and_then(|c| c.get_connection())
                            .expect("connect a writer")
                    });
                    redis::cmd("INCR")
                        .arg(&key)
                        .query::<i64>(con)
                        .expect("INCR");
                    made += 1;
                }
                made
            })
        })
        .collect()
}

/// Runs COUNT shards at once (`--shard i/COUNT`), killing each with probability 1/3 at a
/// random moment; returns how many were killed. Every run that ends by itself exits 0.
fn round(env: &TestEnv, target: &Target, count: u16, rng: &mut fastrand::Rng) -> u32 {
    let vars = target.vars();
    let started = Instant::now();
    let mut runs: Vec<(Child, Option<Duration>)> = (0..count)
        .map(|i| {
            let mut cmd = env.cmd();
            cmd.args(["run", "--json", "--batch-size", "300", "--claim-size", "50"])
                .arg("--shard")
                .arg(format!("{i}/{count}"))
                .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let kill_at = (rng.u32(0..3) == 0).then(|| Duration::from_millis(rng.u64(20..400)));
            (cmd.spawn().expect("start redis-flusher"), kill_at)
        })
        .collect();
    let mut killed = 0;
    for (child, kill_at) in &mut runs {
        if let Some(at) = *kill_at {
            while started.elapsed() < at && child.try_wait().expect("try_wait").is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if child.try_wait().expect("try_wait").is_none() {
                let _ = child.kill(); // SIGKILL
                killed += 1;
            }
        }
    }
    for (child, _) in runs {
        let (out, _) = finish_within(child, Duration::from_secs(60));
        if out.code.is_none() {
            continue;
        }
        out.expect(0);
        let status = out.json()["status"].as_str().map(str::to_owned);
        assert!(
            matches!(status.as_deref(), Some("ok") | Some("locked")),
            "shard of {count}: status {status:?}\n{}",
            out.stderr
        );
    }
    env.wait_for_unlock();
    killed
}

fn shards_under_load(env: &TestEnv, target: &Target) {
    let (seed, mut rng) = seeded_rng();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = writers(env, target, &stop);
    let mut killed = 0;
    // Three shards at once, then a change of COUNT each few rounds: 4, then 3, then 8. A kill
    // leaves journals that a shard of the next layout (or the last, unsharded run) recovers.
    for count in [3u16, 3, 3, 4, 4, 3, 8, 8] {
        killed += round(env, target, count, &mut rng);
    }
    stop.store(true, Ordering::Relaxed);
    let made: i64 = writers
        .into_iter()
        .map(|w| w.join().expect("a writer"))
        .sum();
    let vars = target.vars();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let last = env.run_with(&["run", "--json"], &pairs);
    last.expect(0);
    eprintln!("{made} INCRs; {killed} shard runs killed");
    assert!(
        killed > 0,
        "no run was killed: the test proved nothing (seed {seed})"
    );
    assert_eq!(env.total(), made, "seed {seed}");
    assert!(target.keys(env).is_empty(), "counters left (seed {seed})");
    assert!(
        target.journals(env).is_empty(),
        "journals left (seed {seed})"
    );
    // The shards' batches are in the ledger: their ids carry their range (`~first-end`).
    let sharded: i64 = env
        .pg()
        .query_one(
            "SELECT count(*) FROM redis_flusher_batches WHERE batch_id LIKE '%~%'",
            &[],
        )
        .expect("read the ledger")
        .get(0);
    assert!(
        sharded > 0,
        "no batch of a shard in the ledger (seed {seed})"
    );
}

#[test]
fn shards_of_changing_count_on_one_redis_under_kills_count_every_hit_once() {
    let env = TestEnv::new(CODES as u32);
    shards_under_load(&env, &Target::One);
}

#[test]
fn shards_of_changing_count_on_a_cluster_under_kills_count_every_hit_once() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, CODES as u32);
    let target = Target::Cluster(cluster);
    shards_under_load(&env, &target);
}

/// A shard claims only the keys of its slots and leaves the rest where they are.
#[test]
fn a_shard_flushes_only_its_slots() {
    let env = TestEnv::new(1000);
    let expected = env.set_many(1000, |i| i64::from(i % 5 + 1));
    let first = env.run(&["run", "--json", "--shard", "0/2"]);
    first.expect(0);
    let left = env.keys(&env.prefix);
    assert!(
        !left.is_empty() && left.len() < 1000,
        "{} keys left",
        left.len()
    );
    for k in &left {
        assert!(
            redis_flusher::redis::slot(k.as_bytes()) >= 8192,
            "{k} is in shard 0/2's slots and was left"
        );
    }
    assert_eq!(first.json()["keys"], 1000 - left.len());
    env.run(&["run", "--shard", "1/2"]).expect(0);
    assert!(env.keys(&env.prefix).is_empty());
    assert_eq!(env.total(), expected);
}

#[test]
fn a_shard_setting_that_cannot_work_is_refused() {
    let env = TestEnv::new(10);
    for bad in ["3/3", "1", "a/2", "0/0"] {
        let out = env.run(&["run", "--shard", bad]);
        out.expect(2);
        assert!(out.stderr.contains("--shard"), "{bad}: {}", out.stderr);
    }
    let out = env.run_with(&["run"], &[("REDIS_FLUSHER_SHARDS", "3")]);
    out.expect(2);
    assert!(
        out.stderr.contains("JOB_COMPLETION_INDEX"),
        "{}",
        out.stderr
    );
    let out = env.run_with(
        &["run", "--json"],
        &[("REDIS_FLUSHER_SHARDS", "2"), ("JOB_COMPLETION_INDEX", "1")],
    );
    out.expect(0);
    assert!(out.stderr.contains("shard 1/2"), "{}", out.stderr);
}

/// The highest fence among slots `from..to` of a cluster (0 where none was raised).
fn highest_fence(cluster: &RedisCluster, env: &TestEnv, from: u16, to: u16) -> i64 {
    let owner = cluster.owners();
    cluster
        .keys(&env.journal_prefix)
        .into_iter()
        .filter(|k| k.ends_with("}fence"))
        .map(|k| (redis_flusher::redis::slot(k.as_bytes()), k))
        .filter(|(s, _)| (from..to).contains(s))
        .map(|(s, k)| {
            redis::cmd("GET")
                .arg(&k)
                .query::<i64>(&mut cluster.con(owner[s as usize]))
                .expect("GET a fence")
        })
        .max()
        .unwrap_or(0)
}

/// A journal is recovered by the one shard that owns its first slot now, whatever layout
/// left it: a shard of 4 killed after a claim, then shards of 3 (each run alone, the others
/// first); a run without shards killed, then shards of 2. On a cluster the recovering shard
/// fences the journal's slots beyond its own first.
fn a_journal_is_recovered_by_the_shard_that_owns_its_first_slot(target: &Target, env: &TestEnv) {
    let vars = target.vars();
    let mut pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut expected = 0;
    for (dead, layout, owner) in [("0/4", 3u16, 0u16), ("", 2, 0), ("3/4", 3, 2)] {
        expected += match target {
            Target::One => env.set_many(3000, |i| i64::from(i % 4 + 1)),
            Target::Cluster(c) => c.set_many(&env.prefix, 3000, |i| i64::from(i % 4 + 1)),
        };
        let mut killed = pairs.clone();
        killed.push(("REDIS_FLUSHER_FAULT", "after_claim"));
        let mut args = vec!["run", "--batch-size", "300", "--claim-size", "50"];
        if !dead.is_empty() {
            args.extend(["--shard", dead]);
        }
        env.run_with(&args, &killed).expect_killed();
        assert!(!target.journals(env).is_empty(), "{dead}: no journal left");
        env.wait_for_unlock();
        // The owner last, so that a shard that took a journal not its own would be seen.
        let order = (0..layout).filter(|&i| i != owner).chain([owner]);
        for i in order {
            let shard = format!("{i}/{layout}");
            let fence_before = match target {
                Target::Cluster(c) => highest_fence(c, env, 16384 - 100, 16384),
                Target::One => 0,
            };
            let out = env.run_with(&["run", "--json", "--shard", &shard], &pairs);
            out.expect(0);
            let recovered = out.json()["recovered_batches"].as_i64().expect("a count");
            assert_eq!(
                recovered,
                i64::from(i == owner),
                "journal of run {dead:?}: shard {shard} recovered {recovered}\n{}",
                out.stderr
            );
            if let (Target::Cluster(c), true, "") = (target, i == owner, dead) {
                // The dead run owned every slot: its journal reaches the last slots, whose
                // fences the recovering shard 0/2 raised too.
                assert!(highest_fence(c, env, 16384 - 100, 16384) > fence_before);
            }
        }
        assert!(target.journals(env).is_empty(), "{dead}: journals left");
        pairs.retain(|(k, _)| *k != "REDIS_FLUSHER_FAULT");
    }
    env.run_with(&["run"], &pairs).expect(0);
    assert_eq!(env.total(), expected);
    assert!(target.keys(env).is_empty());
}

#[test]
fn a_journal_of_another_layout_is_recovered_by_its_first_slots_shard_on_one_redis() {
    let env = TestEnv::new(3000);
    a_journal_is_recovered_by_the_shard_that_owns_its_first_slot(&Target::One, &env);
}

#[test]
fn a_journal_of_another_layout_is_recovered_by_its_first_slots_shard_on_a_cluster() {
    let cluster = start_cluster(3, 0);
    let env = TestEnv::on(cluster.nodes[0].port, servers().pg_port, 3000);
    let target = Target::Cluster(cluster);
    a_journal_is_recovered_by_the_shard_that_owns_its_first_slot(&target, &env);
}
