//! A run's figures to a Prometheus Pushgateway, for alerts on a job that runs and ends (a
//! Kubernetes CronJob): `<gateway>/metrics/job/redis-flusher/<label>@base64/<value>…`.

use base64::Engine as _;

use super::http::{send, Endpoint};
use crate::output::metrics::CONTENT_TYPE;

/// The group's path: `job` and the grouping labels, their values in URL-safe base64 (a
/// journal prefix holds `:`, which a path may not carry as is).
fn group_path(grouping: &[(&str, String)]) -> String {
    let mut path = String::from("/metrics/job/redis-flusher");
    for (label, value) in grouping {
        path.push_str(&format!(
            "/{label}@base64/{}",
            base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes())
        ));
    }
    path
}

/// Pushes `body` (the run's metrics); `replace`: the whole group (PUT, a success), else only
/// the families in `body` (POST), which keeps the last success time the gateway has.
pub fn push(
    agent: &ureq::Agent,
    gateway: &Endpoint,
    grouping: &[(&str, String)],
    body: &str,
    replace: bool,
) {
    let url = gateway.join(&group_path(grouping));
    let method = if replace { "PUT" } else { "POST" };
    match send(agent, gateway, method, &url, CONTENT_TYPE, body) {
        Ok(()) => log::debug!(
            "pushed the run's metrics to the Pushgateway at {}",
            gateway.shown
        ),
        Err(e) => log::warn!(
            "could not push the run's metrics to the Pushgateway at {} ({e}); the run's \
             outcome stands",
            gateway.shown
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_names_the_job_and_the_journal_prefix() {
        assert_eq!(
            group_path(&[("journal_prefix", "redis_flusher:journal:".into())]),
            "/metrics/job/redis-flusher/journal_prefix@base64/cmVkaXNfZmx1c2hlcjpqb3VybmFsOg=="
        );
    }
}
