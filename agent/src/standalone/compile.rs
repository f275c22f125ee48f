//! Compile caches in standalone mode: no pods to watch, so a scope is in use while a process
//! on this machine holds something under it (a `/proc` scan: cwd, root, open files, mapped
//! files) or the model's `health-url` answers 2xx; the first answer after none marks the scope
//! used (what a pod turning Ready does in a cluster). The keeper runs as in cluster mode.
//!
//! A models file's `registry` pushes sealed scopes as in a cluster (without a fleet-wide push
//! claim: [`NoClaim`]); a standalone node has no fleet to vouch for a digest, so it imports
//! nothing by itself: `coldctl cache import --here --digest` names the digest to trust.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::models::NamedModel;
use crate::api::CompileCacheStatus;
use crate::caches::keeper::{Inputs, PodUse};
use crate::caches::runner::{self, PassContext, Runner, Settings};
use crate::caches::ship::NoClaim;
use crate::caches::shipper::{ShipSettings, Shipper};
use crate::gpu::GpuReport;
use crate::images::RegistryClient;
use crate::warmer::Credentials;

/// Bound on one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The compile caches of a standalone node.
pub(super) struct CompileCaches {
    settings: Settings,
    runner: Runner,
    shipper: Shipper,
    http: reqwest::Client,
    proc_root: PathBuf,
}

impl CompileCaches {
    /// Caches under `settings` of node `node`, in-use scans of `proc_root` (`/proc`).
    pub(super) fn new(settings: Settings, node: &str, proc_root: PathBuf) -> CompileCaches {
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        let shipper = Shipper::new(
            &settings.cache_root,
            ShipSettings {
                node: node.to_string(),
                import_only: settings.import_only,
                claim: std::sync::Arc::new(NoClaim),
            },
        );
        CompileCaches {
            runner: Runner::new(&settings.cache_root),
            shipper,
            settings,
            http,
            proc_root,
        }
    }

    /// Probes the health URLs, starts a keeper run, returns the scopes of the last one.
    pub(super) async fn pass(
        &mut self,
        entries: &[NamedModel],
        ctx: PassContext<'_, impl Credentials>,
        gpu: Option<&GpuReport>,
        registry: impl Future<Output = RegistryClient>,
    ) -> Vec<CompileCacheStatus> {
        let (models, plan, now) = (ctx.models, ctx.plan, ctx.now);
        let pods = self.probe(entries).await;
        let (settings, proc_root) = (&self.settings, &self.proc_root);
        let inputs = || Inputs {
            wants: runner::wants(models, plan),
            gpu_product: runner::gpu_product(gpu),
            pods,
            held: BTreeSet::new(),
            proc_root: Some(proc_root.clone()),
            budget: Some(settings.budget),
            now: runner::nanos(now),
        };
        let mut statuses = self.runner.pass(true, inputs, ctx.metrics).await;
        // No fleet to vouch for a digest: exports only (imports by `coldctl cache import`).
        runner::ship(
            &mut self.shipper,
            &mut statuses,
            &ctx,
            registry,
            async || None,
        )
        .await;
        statuses
    }

    /// Per model with a health URL: answering 2xx counts as a running, Ready server.
    async fn probe(&self, entries: &[NamedModel]) -> BTreeMap<String, PodUse> {
        let probes = entries.iter().filter_map(|e| {
            let url = e.model.health_url.clone()?;
            let http = self.http.clone();
            Some(async move {
                let up = matches!(http.get(&url).send().await, Ok(r) if r.status().is_success());
                (e.name.clone(), url, up)
            })
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|(_, _, up)| *up)
            .map(|(name, url, _)| {
                let ready = [format!("health:{url}")].into();
                (
                    name,
                    PodUse {
                        running: true,
                        ready,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::standalone::models::ModelEntry;

    /// A loopback server answering every request with `status`, a bounded number of times.
    async fn server(status: u16) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/health")
    }

    fn entry(name: &str, url: Option<String>) -> NamedModel {
        let mut model = ModelEntry::new(format!("org/{name}"));
        model.health_url = url;
        NamedModel {
            name: name.into(),
            model,
        }
    }

    #[tokio::test]
    async fn a_health_url_that_answers_2xx_counts_as_a_ready_server() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            cache_root: dir.path().into(),
            budget: 1 << 20,
            import_only: false,
        };
        let c = CompileCaches::new(settings, "node", "/proc".into());
        let up = server(200).await;
        let failing = server(503).await;
        // A port nothing listens on: bind one, then drop it.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/health", l.local_addr().unwrap())
        };
        let entries = [
            entry("up", Some(up.clone())),
            entry("failing", Some(failing)),
            entry("closed", Some(closed)),
            entry("none", None),
        ];
        let uses = c.probe(&entries).await;
        assert_eq!(uses.len(), 1, "{uses:?}");
        assert!(uses["up"].running);
        assert_eq!(uses["up"].ready, [format!("health:{up}")].into());
    }
}
