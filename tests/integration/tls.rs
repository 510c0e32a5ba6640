//! TLS to both servers, with a private CA the harness makes: Redis on its `--tls-port` (with
//! and without client certificates), PostgreSQL with `ssl=on` and every `sslmode`.

use crate::common::{free_port, make_pki, servers, start_postgres_tls, start_redis, Pki, TestEnv};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A Redis with a plain port (for the harness) and a TLS port (for the flusher).
fn tls_redis(pki: &Pki, auth_clients: &str) -> (crate::common::RedisServer, u16) {
    let tls_port = free_port();
    let server = start_redis(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        path(&pki.server_cert),
        "--tls-key-file",
        path(&pki.server_key),
        "--tls-ca-cert-file",
        path(&pki.ca),
        "--tls-auth-clients",
        auth_clients,
    ]);
    (server, tls_port)
}

#[test]
fn redis_over_tls_with_a_private_ca() {
    let pki = make_pki();
    let (redis, tls_port) = tls_redis(&pki, "no");
    let env = TestEnv::on(redis.port, servers().pg_port, 20);
    let expected = env.set_many(20, i64::from);
    let url = format!("rediss://localhost:{tls_port}/0");

    // The wrong CA: refused, and the error names the server and what to check.
    let out = env.run_with(
        &["run"],
        &[("REDIS_URL", &url), ("REDIS_CA_FILE", path(&pki.other_ca))],
    );
    out.expect(2); // a certificate a person must fix
    assert!(
        out.stderr.contains(&format!(
            "could not connect to Redis at localhost:{tls_port} db 0 (TLS)"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("REDIS_CA_FILE"), "{}", out.stderr);
    // Plain TCP to the TLS port: refused too, nothing claimed.
    let out = env.run_with(
        &["run"],
        &[("REDIS_URL", &format!("redis://localhost:{tls_port}/0"))],
    );
    out.expect(1);
    assert_eq!(env.keys(&env.prefix).len(), 20);

    // The right CA: a normal flush, exactly once.
    let out = env.run_with(
        &["run"],
        &[("REDIS_URL", &url), ("REDIS_CA_FILE", path(&pki.ca))],
    );
    out.expect(0);
    assert!(out.stderr.contains("(TLS)"), "{}", out.stderr);
    assert_eq!(env.total(), expected);
    assert!(env.keys(&env.prefix).is_empty());

    // The parts form says TLS with REDIS_TLS.
    env.set("c1", "5");
    env.run_with(
        &["run"],
        &[
            ("REDIS_HOST", "localhost"),
            ("REDIS_PORT", &tls_port.to_string()),
            ("REDIS_TLS", "true"),
            ("REDIS_CA_FILE", path(&pki.ca)),
        ],
    )
    .expect(0);
    assert_eq!(env.total(), expected + 5);

    // A CA file on a plain connection is a mistake worth saying.
    let out = env.run_with(&["run"], &[("REDIS_CA_FILE", path(&pki.ca))]);
    out.expect(2);
    assert!(out
        .stderr
        .contains("`REDIS_CA_FILE` is set but the Redis connection is not TLS"));
}

#[test]
fn redis_that_asks_for_a_client_certificate() {
    let pki = make_pki();
    let (redis, tls_port) = tls_redis(&pki, "yes");
    let env = TestEnv::on(redis.port, servers().pg_port, 5);
    let expected = env.set_many(5, |_| 2);
    let url = format!("rediss://localhost:{tls_port}");
    let out = env.run_with(
        &["run"],
        &[("REDIS_URL", &url), ("REDIS_CA_FILE", path(&pki.ca))],
    );
    out.expect(1);
    assert_eq!(env.total(), 0);
    env.run_with(
        &["run"],
        &[
            ("REDIS_URL", &url),
            ("REDIS_CA_FILE", path(&pki.ca)),
            ("REDIS_CLIENT_CERT_FILE", path(&pki.client_cert)),
            ("REDIS_CLIENT_KEY_FILE", path(&pki.client_key)),
        ],
    )
    .expect(0);
    assert_eq!(env.total(), expected);
}

#[test]
fn postgres_sslmodes_as_libpq_spells_them() {
    let pki = make_pki();
    let pg = start_postgres_tls(&pki);
    let env = TestEnv::on(servers().redis_port, pg.port, 10);
    // This role may only come over TLS (pg_hba: hostnossl … reject).
    let role = format!("flusher_tls_{}", env.n);
    env.pg()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN IN ROLE tls_users; GRANT SELECT, UPDATE ON urls TO {role}; \
             GRANT CREATE ON SCHEMA public TO {role}"
        ))
        .unwrap();
    let url = |host: &str, query: &str| {
        format!("postgres://{role}@{host}:{}/{}?{query}", pg.port, env.db)
    };
    let ca = path(&pki.ca).to_owned();
    let other = path(&pki.other_ca).to_owned();
    let mut added = 0;
    // (DATABASE_URL, flushes?, what the error says)
    let cases = [
        (
            url("localhost", "sslmode=disable"),
            false,
            "could not connect to PostgreSQL",
        ),
        // libpq's default: TLS when the server offers it.
        (url("localhost", ""), true, ""),
        (url("127.0.0.1", "sslmode=require"), true, ""),
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            true,
            "",
        ),
        // The certificate names localhost, not 127.0.0.1: verify-ca passes, verify-full not.
        (
            url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            true,
            "",
        ),
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            false,
            "(sslmode=verify-full)",
        ),
        (
            url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            false,
            "could not connect to PostgreSQL at",
        ),
        // require with a root certificate checks it, as libpq does.
        (
            url("localhost", &format!("sslmode=require&sslrootcert={other}")),
            false,
            "sslrootcert",
        ),
    ];
    for (database_url, works, says) in cases {
        env.set("c1", "1");
        let out = env.run_with(&["run"], &[("DATABASE_URL", &database_url)]);
        if works {
            out.expect(0);
            added += 1;
        } else {
            // Refused for its TLS or its role: a person must change a setting.
            out.expect(2);
            assert!(out.stderr.contains(says), "{database_url}: {}", out.stderr);
        }
        assert_eq!(env.count("c1"), added, "{database_url}");
    }
    // The parts form, with DB_SSLMODE and DB_SSLROOTCERT.
    env.run_with(
        &["run"],
        &[
            ("DB_HOST", "localhost"),
            ("DB_USER", &role),
            ("DB_SSLMODE", "verify-full"),
            ("DB_SSLROOTCERT", &ca),
        ],
    )
    .expect(0);
    assert_eq!(env.count("c1"), added + 1);
    let out = env.run_with(&["check"], &[("DB_SSLMODE", "verify-everything")]);
    out.expect(2);
    // The value is not echoed: in the wrong place, it might have been a password.
    assert!(
        out.stderr.contains("`DB_SSLMODE`: sslmode is not one of"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("verify-everything"), "{}", out.stderr);
    env.pg()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .unwrap();
}
