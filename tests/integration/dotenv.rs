//! `.env` read as python-dotenv reads it: every case of `fixtures/dotenv/cases.json` (what
//! python-dotenv itself made of each tricky text, written by `fixtures/dotenv/reference.py`)
//! read by redis-flusher's reader, and a password with a `$` taken as written by a real run.

use std::collections::BTreeMap;

use redis_flusher::config::dotenv::{parse, Entry, ParseError};
use serde_json::Value;

use crate::common::TestEnv;

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_owned()))
        .collect()
}

#[test]
fn every_case_reads_as_python_dotenv_reads_it() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/dotenv/cases.json")).expect("cases.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut differ = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or_default();
        let text = case["text"].as_str().expect("text");
        let env = strings(&case["env"]);
        let python = &case["python"];
        let ours = parse(text, |name| env.get(name).cloned());
        let problem = match &case["expect"]["error"] {
            // Where python-dotenv skips a statement (or crashes), we refuse the file, naming
            // the line and (once read) the variable.
            Value::Object(e) => {
                let refused = python["skipped_lines"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
                    || !python["exception"].is_null()
                    || case["expect"]["why"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("bare key after"));
                assert!(refused, "{id}: python-dotenv read it");
                let want = ParseError {
                    line: e["line"].as_u64().expect("line") as usize,
                    name: e["name"].as_str().map(str::to_owned),
                };
                match ours {
                    Err(got) if got == want => None,
                    other => Some(format!("want {want:?}, got {other:?}")),
                }
            }
            _ => {
                let want: Vec<Entry> = python["entries"]
                    .as_array()
                    .expect("entries")
                    .iter()
                    .map(|e| Entry {
                        name: e[0].as_str().expect("name").to_owned(),
                        value: e[1].as_str().expect("value").to_owned(),
                        line: e[2].as_u64().expect("line") as usize,
                    })
                    .collect();
                // What load_dotenv() leaves in the environment: the environment wins, then
                // the last value in the file.
                let mut environ = env.clone();
                if let Ok(entries) = &ours {
                    for e in entries {
                        if !env.contains_key(&e.name) {
                            environ.insert(e.name.clone(), e.value.clone());
                        }
                    }
                }
                match ours {
                    Ok(got) if got == want && environ == strings(&python["environ_after"]) => None,
                    // The fixtures hold no real secrets: values may be shown here.
                    Ok(got) => Some(format!(
                        "want {:?}, got {:?}",
                        want.iter()
                            .map(|e| (&e.name, &e.value, e.line))
                            .collect::<Vec<_>>(),
                        got.iter()
                            .map(|e| (&e.name, &e.value, e.line))
                            .collect::<Vec<_>>()
                    )),
                    Err(e) => Some(format!("want the entries, got {e:?}")),
                }
            }
        };
        if let Some(p) = problem {
            differ.push(format!("{id}: {p}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} cases differ from python-dotenv {}:\n{}",
        differ.len(),
        cases.len(),
        fixture["python_dotenv_version"],
        differ.join("\n")
    );
}

/// The motivating case: an unquoted `$` in a password, which dotenvy read as `pa`.
#[test]
fn a_password_with_a_dollar_reaches_postgres_as_written() {
    let env = TestEnv::new(2);
    let role = format!("dollar_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pa$word1' IN ROLE password_users;
             GRANT ALL ON SCHEMA public TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .unwrap();
    std::fs::write(
        env.workdir.path().join(".env"),
        format!("DB_USER={role}\nDB_PASSWORD=pa$word1\n"),
    )
    .unwrap();
    env.set("c1", "4");
    // The .env in the working directory gives the user and the password (the environment
    // gives neither); read as `pa`, the password would be refused (exit 2).
    let mut cmd = env.cmd();
    cmd.env_remove("DB_USER").arg("run");
    env.output(cmd).expect(0);
    assert_eq!(env.count("c1"), 4);
}
