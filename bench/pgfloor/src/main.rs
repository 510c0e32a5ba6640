//! pgfloor N CHUNK MODE [ROWS]: the Postgres side of one flush of N counts, alone, by the fastest means we know of,
//! to put a floor under the flusher's time. One connection, one transaction, rows sorted by code.
//! ROWS: a file of `code count` lines, the increments populate.py makes (bench/pgfloor.sh writes it), so that the
//! floor applies the very same increments as the flusher; without it, codes c1..cN with counts i % 100 + 1.
//! MODE values: prepared VALUES with CHUNK rows bound as parameters; unnest: two arrays per CHUNK.
use postgres::{Client, NoTls};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a[1].parse().unwrap();
    let chunk: usize = a[2].parse().unwrap();
    let mode = a[3].as_str();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        format!("host={} port={} user={} dbname={} password={}", env("DB_HOST", "localhost"), env("DB_PORT", "5432"),
                env("DB_USER", "postgres"), env("DB_NAME", "flusher_bench"), env("PGPASSWORD", ""))
    });
    let mut c = Client::connect(&url, NoTls).unwrap();
    let mut rows: Vec<(String, i64)> = match a.get(4) {
        Some(path) => std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').expect("a `code count` line");
                (k.to_string(), v.parse().unwrap())
            })
            .collect(),
        None => (1..=n).map(|i| (format!("c{i}"), (i % 100 + 1) as i64)).collect(),
    };
    assert_eq!(rows.len(), n, "rows in {:?}", a.get(4));
    rows.sort();
    let t = Instant::now();
    let mut tx = c.transaction().unwrap();
    for part in rows.chunks(chunk) {
        match mode {
            "values" => {
                let mut sql = String::from("UPDATE urls SET access_count = access_count + d.count FROM (VALUES ");
                for i in 0..part.len() {
                    if i > 0 { sql.push(','); }
                    sql.push_str(&format!("(${}::text,${}::int8)", 2 * i + 1, 2 * i + 2));
                }
                sql.push_str(") AS d(short_code, count) WHERE urls.short_code = d.short_code");
                let mut p: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::with_capacity(part.len() * 2);
                for (k, v) in part { p.push(k); p.push(v); }
                tx.execute(sql.as_str(), &p).unwrap();
            }
            _ => {
                let ks: Vec<&str> = part.iter().map(|r| r.0.as_str()).collect();
                let vs: Vec<i64> = part.iter().map(|r| r.1).collect();
                tx.execute("UPDATE urls SET access_count = access_count + d.count FROM unnest($1::text[], $2::int8[]) AS d(short_code, count) WHERE urls.short_code = d.short_code", &[&ks, &vs]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
    println!("pg_{mode}_{chunk}_s={:.3}", t.elapsed().as_secs_f64());
}
