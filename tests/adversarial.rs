//! Exactly once beyond our own assumptions: shared servers, odd tables, poisoned rows, hostile
//! settings. Each test is a case found by using the flusher the way real installs and hostile
//! operators do.

mod common;

use common::TestEnv;

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
