//! How an error reads on one line: its chain of causes, each said once.
//!
//! anyhow's `{:#}` joins every cause with `: `; some libraries' errors also print their source
//! in their own message (the redis crate's `NoPerm: … : NoPerm: …`), which then reads twice.

/// `e` and its causes, joined with `: `, a cause that the text already holds left out.
pub fn text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if said.is_empty() || out.contains(&said) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&said);
    }
    out
}

/// Whether a connection error's text says its host name does not resolve (not a lookup that
/// failed for now, which the next run may get past).
pub fn unknown_host(text: &str) -> bool {
    text.contains("Name or service not known")
        || text.contains("No address associated with hostname")
        || text.contains("nodename nor servname provided")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_said_twice_is_said_once() {
        let inner = anyhow::anyhow!("NoPerm: no permissions");
        let e = inner
            .context("NoPerm: no permissions")
            .context("deleting journal j failed");
        assert_eq!(
            text(&e),
            "deleting journal j failed: NoPerm: no permissions"
        );
        let plain = anyhow::anyhow!("refused").context("connecting");
        assert_eq!(text(&plain), "connecting: refused");
    }
}
