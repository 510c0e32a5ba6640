//! Telling the outside how runs go, as they go: after each run its figures to a Prometheus
//! Pushgateway (`push.rs`), and a cron monitor's pings at its start and end (`ping.rs`).
//!
//! A thread of its own sends them, in order, so that a slow or dead endpoint never holds a
//! flush up; each request is bounded (`http::TIMEOUT`), and none changes a run's outcome. A
//! process that ends waits for what is queued ([`Notifier::finish`]), a few seconds at most.

mod http;
mod ping;
mod push;

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use anyhow::Result;

use self::http::Endpoint;
use crate::cli::MonitorArgs;
use crate::config::FlushConfig;
use crate::output::{code, metrics};
use crate::report::{Report, Status};

/// Where a run's news goes, checked before anything runs.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    push: Option<Endpoint>,
    ping: Option<Endpoint>,
    /// The Pushgateway's grouping labels besides `job`: what tells two flushers apart.
    grouping: Vec<(&'static str, String)>,
}

impl Targets {
    /// From the monitoring flags; a URL that cannot be sent to is a setting to fix (exit 2).
    pub fn from_args(args: &MonitorArgs, flush: &FlushConfig) -> Result<Targets> {
        let endpoint = |var: &str, url: &Option<String>| {
            url.as_deref()
                .filter(|u| !u.trim().is_empty())
                .map(|u| Endpoint::parse(var, u))
                .transpose()
        };
        Ok(Targets {
            push: endpoint("REDIS_FLUSHER_METRICS_PUSH_URL", &args.metrics_push_url)?,
            ping: endpoint("REDIS_FLUSHER_PING_URL", &args.ping_url)?,
            grouping: grouping(flush),
        })
    }
}

/// `journal_prefix` tells two flushers apart; a shard adds `shard="INDEX/COUNT"`, so that the
/// shards of one flusher do not replace each other's group.
fn grouping(flush: &FlushConfig) -> Vec<(&'static str, String)> {
    let mut out = vec![("journal_prefix", flush.source.journal_prefix.clone())];
    let shard = flush.source.shard;
    if !shard.is_all() {
        out.push(("shard", format!("{}/{}", shard.index, shard.count)));
    }
    out
}

enum News {
    Started,
    Ended {
        status: Status,
        summary: String,
        /// The run's metrics and whether they replace the group (a success) or only their
        /// own families (the last success time stays as the last success pushed it).
        metrics: Option<(String, bool)>,
    },
}

/// The thread that sends the news; none when nothing is to be told.
pub struct Notifier {
    news: Option<Sender<News>>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    pub fn start(targets: Targets) -> Notifier {
        if targets.push.is_none() && targets.ping.is_none() {
            return Notifier {
                news: None,
                thread: None,
            };
        }
        let (news, inbox) = mpsc::channel::<News>();
        let thread = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let agent = http::agent();
                for n in inbox {
                    match n {
                        News::Started => {
                            if let Some(p) = &targets.ping {
                                ping::start(&agent, p);
                            }
                        }
                        News::Ended {
                            status,
                            summary,
                            metrics,
                        } => {
                            if let (Some(gw), Some((body, replace))) = (&targets.push, metrics) {
                                push::push(&agent, gw, &targets.grouping, &body, replace);
                            }
                            if let Some(p) = &targets.ping {
                                ping::end(&agent, p, code(status), &summary);
                            }
                        }
                    }
                }
            });
        match thread {
            Ok(thread) => Notifier {
                news: Some(news),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!("could not start the thread that pushes and pings ({e}); none are sent");
                Notifier {
                    news: None,
                    thread: None,
                }
            }
        }
    }

    /// A run starts.
    pub fn started(&self) {
        if let Some(n) = &self.news {
            let _ = n.send(News::Started);
        }
    }

    /// A run ended with `report`. A run that found the lock taken pushes nothing: the run
    /// that holds it pushes its own figures (as the metrics file).
    pub fn ended(&self, report: &Report) {
        let Some(n) = &self.news else { return };
        let metrics = (report.status != Status::Locked).then(|| {
            (
                metrics::render(report, metrics::unix_now(), None),
                report.status == Status::Ok,
            )
        });
        let _ = n.send(News::Ended {
            status: report.status,
            summary: report.summary(),
            metrics,
        });
    }

    /// Waits for what is queued to be sent (each request bounded).
    pub fn finish(mut self) {
        drop(self.news.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
