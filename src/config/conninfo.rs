//! libpq's connection strings as `DATABASE_URL` may hold them, a `postgres://` URL or the
//! `key=value` form: the `ssl*` parameters taken out (the `postgres` crate refuses
//! `verify-ca` and `verify-full`; `tls.rs` makes those checks), the rest handed on as written.

use std::path::PathBuf;

use crate::tls::PgTls;

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a connection string, a
/// `postgres://` URL or libpq's `key=value` form, returning the string without them and what
/// they said. A URL with more than one `@` before its host is refused: where its password
/// ends is a guess (the message shows no part of it).
pub(crate) fn split_conninfo(s: &str) -> std::result::Result<(String, PgTls), String> {
    let Some(rest) = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
    else {
        return split_keyvalue(s);
    };
    let before_query = rest.split('?').next().unwrap_or_default();
    if before_query.matches('@').count() > 1 {
        return Err(
            "has more than one `@` before its host, so where its password ends is unclear: \
             write a `@` in the password as `%40` (and any `:`, `/`, `?` or `#` in it \
             percent-encoded too)"
                .into(),
        );
    }
    split_url(s)
}

/// libpq's keywords: a word that is one of them may be named in an error, any other word is
/// a guess at a value (a password with a space in it) and must not be.
const KEYWORDS: [&str; 34] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "target_session_attrs",
    "load_balance_hosts",
];

/// A word of a connection string, as an error may name it: a keyword by itself, anything else
/// only by where it is (it may be part of a password).
fn word(key: &str, at: usize) -> String {
    if KEYWORDS.contains(&key) {
        format!("`{key}`")
    } else {
        format!("the word at character {at}")
    }
}

/// libpq's `key=value` connection string, split into its pairs: values may be quoted
/// (`'…'`, with `\'` and `\\` inside) and have spaces around `=`. An error names a keyword
/// or a position, never a value.
fn keyvalue_pairs(s: &str) -> std::result::Result<Vec<(String, String, usize)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().enumerate().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(at, _)) = chars.peek() else {
            return Ok(out);
        };
        let at = at + 1;
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(format!(
                "{} is not followed by `=` (a value with a space in it must be quoted: \
                 password='…')",
                word(&key, at)
            ));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.extend(chars.next().map(|(_, c)| c)),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "the value of {} has no closing quote",
                            word(&key, at)
                        ))
                    }
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value, at));
    }
}

/// As [`split_url`], for libpq's `key=value` form.
fn split_keyvalue(s: &str) -> std::result::Result<(String, PgTls), String> {
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for (key, value, at) in keyvalue_pairs(s)? {
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "{} is not a connection setting libpq knows (host, port, dbname, user, \
                 password, sslmode, …)",
                word(&key, at)
            ));
        }
        match key.as_str() {
            "sslmode" => tls.mode = Some(value.parse()?),
            "sslrootcert" => tls.rootcert = Some(PathBuf::from(value)),
            "sslcert" => tls.cert = Some(PathBuf::from(value)),
            "sslkey" => tls.key = Some(PathBuf::from(value)),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), tls))
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a `postgres://` URL's query,
/// returning the URL without them and what they said.
fn split_url(url: &str) -> std::result::Result<(String, PgTls), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), PgTls::default()));
    };
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for (n, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !KEYWORDS.contains(&k) {
            return Err(format!(
                "parameter {} of the URL's query is not a connection setting libpq knows \
                 (host, port, dbname, user, password, sslmode, …)",
                n + 1
            ));
        }
        let value = || percent_decode(v);
        match k {
            "sslmode" => tls.mode = Some(value()?.parse()?),
            "sslrootcert" => tls.rootcert = Some(PathBuf::from(value()?)),
            "sslcert" => tls.cert = Some(PathBuf::from(value()?)),
            "sslkey" => tls.key = Some(PathBuf::from(value()?)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// A URL parameter's value, percent-decoded (`+` is a space, as in a query string). A `%`
/// that is not followed by two hex digits is an error (the crate would pass it through).
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let plus = s.replace('+', " ");
    let malformed = plus.match_indices('%').any(|(i, _)| {
        !plus
            .get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return Err("a `%` in a URL parameter is not followed by two hex digits".to_owned());
    }
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a URL parameter is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::SslMode;

    #[test]
    fn ssl_parameters_come_out_of_the_url_and_the_rest_stays() {
        let (url, tls) = split_url(
            "postgres://u:p@db:5432/app?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert, Some(PathBuf::from("/etc/ca.pem")));
        let (url, tls) = split_url("postgres://db/app?sslmode=require").unwrap();
        assert_eq!(url, "postgres://db/app");
        assert_eq!(tls.mode, Some(SslMode::Require));
        assert!(split_url("postgres://db/app?sslmode=verify").is_err());
        assert_eq!(
            split_url("postgres://db/app").unwrap().0,
            "postgres://db/app"
        );
    }

    #[test]
    fn libpq_keyvalue_strings_give_up_their_ssl_settings() {
        let (rest, tls) = split_conninfo(
            "host=db port=5432 sslmode = 'verify-full' password='it\\'s' \
             sslrootcert=/etc/ca\\ 1.pem dbname=app",
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5432' password='it\\'s' dbname='app'");
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.rootcert, Some(PathBuf::from("/etc/ca 1.pem")));
        assert!(split_conninfo("host=db sslmode=sure").is_err());
        assert!(split_conninfo("host='db").is_err());
    }

    #[test]
    fn a_url_with_two_at_signs_before_its_host_is_refused_without_its_password() {
        let err = split_conninfo("postgres://u:Xq7@Zk9@db/app").unwrap_err();
        assert!(
            err.contains("`%40`") && !err.contains("Xq7") && !err.contains("Zk9"),
            "{err}"
        );
        assert!(split_conninfo("postgres://u:pa%40ss@db/app").is_ok());
        assert!(split_conninfo("postgresql://u@/app?host=/run/postgresql").is_ok());
    }
}
