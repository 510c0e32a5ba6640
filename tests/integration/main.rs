//! The integration suite: one test binary (ripgrep's shape), so that the private servers
//! (`common/`) start once and the suite compiles once. Each module is one area, driven
//! through the binary as an operator would, against real servers:
//!
//! | module | what |
//! |---|---|
//! | `flush` | the rules of a run: exactly once, unknown codes, bad keys, batches |
//! | `reliability` | the stress proof: kills at every step, random kills, outages, overlaps |
//! | `stage` | a backlog's transactions that gather batches |
//! | `adversarial` | shared servers, poisoned rows, hostile keys |
//! | `config_and_errors`, `settings` | settings, their sources, and what errors say |
//! | `dotenv` | `.env` read as python-dotenv reads it, case by case against python-dotenv's own reading |
//! | `operate` | `check`, `status`, metrics, progress, logs, help |
//! | `serve` | `serve` on a schedule, scraped by Prometheus; pushes to a Pushgateway, pings |
//! | `deploy` | PgBouncer, Unix sockets, Sentinel, replicas, standbys |
//! | `tls` | a private CA, both servers over TLS |
//! | `image` | the container image, built from the Dockerfile and run from its mounted root |
//! | `kubernetes` | the manifests, validated against the Kubernetes 1.31 schemas, and what they hold |
//! | `cluster` | a private Redis Cluster |
//! | `shards` | `--shard`: processes splitting the slots, on one Redis and a cluster |
//! | `traps` | what an operator trips on: default targets, typos, exit codes, secrets in errors |

mod common;

mod adversarial;
mod cluster;
mod config_and_errors;
mod deploy;
mod dotenv;
mod flush;
mod image;
mod kubernetes;
mod operate;
mod reliability;
mod serve;
mod settings;
mod shards;
mod stage;
mod tls;
mod traps;
