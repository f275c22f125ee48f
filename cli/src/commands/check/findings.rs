//! The checks of `coldctl check`, pure: a Deployment and what its ColdModel expects in, the
//! findings out, one per thing that will make its pods start cold. Names come from the agent
//! (`coldstart_agent::api`, the compile-cache env of `caches::pod_env` through `cache env`).

use std::collections::BTreeSet;
use std::path::Path;

use super::argv::{Argv, sleep_seconds};
use super::ids::finding;
pub use super::ids::{Finding, Id};
use crate::commands::cache::env::{PodCache, pod_cache};
use coldstart_agent::api::{
    ColdModel, MODEL_LABEL_READY, POD_MODEL_LABEL, WARMING_TAINT_KEY, WARMING_TAINT_VALUE,
    model_label_key,
};
use coldstart_agent::cluster::GPU_RESOURCE;
use coldstart_agent::images::ImageRef;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Toleration};

/// What the ColdModel and the nodes expect of the pods.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The ColdModel's name.
    pub model: String,
    /// Its Hub repo (the model string vLLM must serve).
    pub repo: String,
    /// Its revision as written (a commit pins).
    pub revision: Option<String>,
    /// Commits the nodes report warm for it (`ColdNode` weights `resolved`).
    pub warmed: BTreeSet<String>,
    /// The image the agents pre-pull.
    pub image: Option<String>,
    /// The agent's Hub cache on the node: `<cache root>/hub`.
    pub hub_host_path: String,
    /// The compile-cache parts (`coldctl cache env`), unless the policy disables them.
    pub compile: Option<PodCache>,
    /// The least a start may take before a probe kills it, in seconds.
    pub min_startup_secs: i64,
}

impl Expect {
    /// What `model` expects on nodes whose agent has `cache_root`.
    pub fn new(
        model: &ColdModel,
        cache_root: &Path,
        warmed: BTreeSet<String>,
        min_startup_secs: i64,
    ) -> anyhow::Result<Expect> {
        let name = coldstart_agent::api::name_of(model).to_string();
        let policy = model.spec.compile_cache.clone().unwrap_or_default();
        let root = coldstart_agent::caches::CacheRoot::new(cache_root);
        let compile = match policy.enabled {
            Some(false) => None,
            _ => Some(pod_cache(&root, &name, &policy)?),
        };
        Ok(Expect {
            model: name,
            repo: model.spec.repo.clone(),
            revision: model.spec.revision.clone(),
            warmed,
            image: model.spec.image.clone(),
            hub_host_path: cache_root.join("hub").to_string_lossy().into_owned(),
            compile,
            min_startup_secs,
        })
    }
}

/// Whether `s` is a full commit sha.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container `check` looks at: the one named, else the only one, else the first running
/// the ColdModel's image, else the first whose words mention vLLM, else the first.
pub fn pick_container<'a>(
    pod: &'a PodSpec,
    name: Option<&str>,
    expect: &Expect,
) -> Result<&'a Container, String> {
    let cs = &pod.containers;
    if let Some(name) = name {
        return cs.iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
            format!("no container {name} (containers: {})", names.join(", "))
        });
    }
    let same_image = |c: &&Container| {
        let want = expect
            .image
            .as_deref()
            .and_then(|i| ImageRef::parse(i).ok());
        let got = c.image.as_deref().and_then(|i| ImageRef::parse(i).ok());
        want.is_some() && want == got
    };
    let vllm = |c: &&Container| {
        let words = c.command.iter().flatten().chain(c.args.iter().flatten());
        c.image.as_deref().unwrap_or_default().contains("vllm")
            || words.into_iter().any(|w| w.contains("vllm"))
    };
    cs.iter()
        .find(same_image)
        .or_else(|| cs.iter().find(vllm))
        .or_else(|| cs.first())
        .ok_or_else(|| "the pod template has no container".to_string())
}

/// Every finding on `deploy`'s pod template (its `container`), in [`Id`] order.
pub fn check(deploy: &Deployment, container: &Container, e: &Expect) -> Vec<Finding> {
    let template = deploy.spec.as_ref().map(|s| &s.template);
    let pod = template.and_then(|t| t.spec.clone()).unwrap_or_default();
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let argv = Argv::new(
        container.command.as_deref().unwrap_or_default(),
        container.args.as_deref().unwrap_or_default(),
    );
    let mut out = Vec::new();
    match labels.get(POD_MODEL_LABEL) {
        Some(m) if *m == e.model => {}
        Some(m) => out.push(finding(
            Id::ModelLabelMissing,
            format!("the pods' label {POD_MODEL_LABEL}={m} names another ColdModel than {}", e.model),
        )),
        None => out.push(finding(
            Id::ModelLabelMissing,
            format!(
                "the pods carry no label {POD_MODEL_LABEL}: {}: the agent does not count them as users of the model's compile cache",
                e.model
            ),
        )),
    }
    out.extend(image(container, e));
    out.extend(model_and_revision(&argv, e));
    out.extend(hub(container, &pod, e));
    out.extend(compile(container, &pod, e));
    out.extend(placement(&pod, e));
    out.extend(drain(container, &pod, &argv));
    out.extend(startup(container, e));
    out.sort_by_key(|f| f.id);
    out
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .rev()
        .find(|v| v.name == name)
        .map(|v| v.value.as_deref().unwrap_or_default())
}

fn image(c: &Container, e: &Expect) -> Option<Finding> {
    let got = c.image.as_deref().unwrap_or_default();
    let Some(want) = &e.image else {
        return Some(finding(
            Id::ImageMismatch,
            format!(
                "ColdModel {} names no image, so no node pre-pulls {got}: set its spec.image",
                e.model
            ),
        ));
    };
    let same = match (ImageRef::parse(want), ImageRef::parse(got)) {
        (Ok(a), Ok(b)) => a == b,
        _ => want == got,
    };
    (!same).then(|| {
        finding(
            Id::ImageMismatch,
            format!("image {got} is not the ColdModel's {want}: the nodes pre-pull {want}"),
        )
    })
}

fn model_and_revision(argv: &Argv, e: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    match argv.model() {
        Some(m) if m == e.repo => {}
        Some(m) => out.push(finding(
            Id::ModelMismatch,
            format!(
                "vLLM serves {m}, not the ColdModel's repo {}: the nodes warmed {}",
                e.repo, e.repo
            ),
        )),
        None => out.push(finding(
            Id::ModelMismatch,
            format!(
                "no model found in the container's command line (want `vllm serve {}`)",
                e.repo
            ),
        )),
    }
    let want = e.revision.as_deref().filter(|r| is_commit(r));
    match argv.flag("revision") {
        None => out.push(finding(
            Id::RevisionUnpinned,
            format!(
                "no --revision: pin the warmed commit ({})",
                want.unwrap_or("the ColdModel's revision")
            ),
        )),
        Some(r) if !is_commit(r) => out.push(finding(
            Id::RevisionUnpinned,
            format!(
                "--revision {r} is not a commit: pin the warmed one ({})",
                want.unwrap_or("a 40-hex sha")
            ),
        )),
        Some(r) => {
            let r = r.to_ascii_lowercase();
            let wrong = match want {
                Some(w) => w.to_ascii_lowercase() != r,
                None => !e.warmed.is_empty() && !e.warmed.contains(&r),
            };
            if wrong {
                let warmed = want.map_or_else(
                    || e.warmed.iter().cloned().collect::<Vec<_>>().join(", "),
                    str::to_string,
                );
                out.push(finding(
                    Id::RevisionMismatch,
                    format!("--revision {r} is not the commit the nodes warm ({warmed})"),
                ));
            }
        }
    }
    out
}

/// The hostPath behind the container's mount at `path`, and whether the mount is read-only;
/// `Err` says what is missing.
fn mounted_host_path(c: &Container, pod: &PodSpec, path: &str) -> Result<(String, bool), String> {
    let trim = |p: &str| p.trim_end_matches('/').to_string();
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| trim(&m.mount_path) == trim(path))
        .ok_or_else(|| format!("nothing is mounted at {path}"))?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("volume {} is not in the pod", mount.name))?;
    let host = volume
        .host_path
        .as_ref()
        .map(|h| h.path.clone())
        .ok_or_else(|| format!("volume {} at {path} is no hostPath", mount.name))?;
    Ok((host, mount.read_only == Some(true)))
}

fn hub(c: &Container, pod: &PodSpec, e: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let want = &e.hub_host_path;
    match env(c, "HF_HUB_CACHE") {
        None | Some("") => out.push(finding(
            Id::HubCacheMissing,
            format!("HF_HUB_CACHE is not set: mount {want} read-only and point HF_HUB_CACHE at it"),
        )),
        Some(path) => match mounted_host_path(c, pod, path) {
            Err(why) => out.push(finding(
                Id::HubCacheMissing,
                format!("HF_HUB_CACHE={path}: {why}: mount the agent's Hub cache {want} there"),
            )),
            Ok((host, _)) if host.trim_end_matches('/') != want.trim_end_matches('/') => {
                out.push(finding(
                    Id::HubCacheMissing,
                    format!("HF_HUB_CACHE={path} mounts {host}, not the agent's Hub cache {want}"),
                ))
            }
            Ok((_, false)) => out.push(finding(
                Id::HubCacheWritable,
                format!("the Hub cache at {path} is mounted writable: set readOnly: true (the agent owns it)"),
            )),
            Ok(_) => {}
        },
    }
    let on = env(c, "HF_HUB_OFFLINE")
        .is_some_and(|v| ["1", "on", "yes", "true"].contains(&v.to_ascii_lowercase().as_str()));
    if !on {
        out.push(finding(
            Id::HubOfflineUnset,
            "HF_HUB_OFFLINE is not 1: a start asks the Hub first (and fails or stalls without it)",
        ));
    }
    out
}

fn compile(c: &Container, pod: &PodSpec, e: &Expect) -> Option<Finding> {
    let want = e.compile.as_ref()?;
    let mut wrong = Vec::new();
    let mut present = 0;
    for var in &want.env {
        match env(c, &var.name) {
            Some(v) if v == var.value => present += 1,
            Some(v) => {
                present += 1;
                wrong.push(format!("{}={v} (want {})", var.name, var.value));
            }
            None => wrong.push(format!("{} unset (want {})", var.name, var.value)),
        }
    }
    let mount = &want.volume_mount.mount_path;
    let host = &want.volume.host_path.path;
    match mounted_host_path(c, pod, mount) {
        Ok((h, _)) if h == *host => present += 1,
        Ok((h, _)) => {
            present += 1;
            wrong.push(format!("{mount} mounts {h} (want hostPath {host})"));
        }
        Err(why) => wrong.push(format!("{why} (want hostPath {host})")),
    }
    if wrong.is_empty() {
        return None;
    }
    let fix = format!("see `coldctl cache env {}`", e.model);
    Some(if present == 0 {
        finding(
            Id::CompileCacheMissing,
            format!("no compile cache: every start compiles again ({fix})"),
        )
    } else {
        finding(
            Id::CompileCacheDiffers,
            format!(
                "compile cache differs from `cache env`: {} ({fix})",
                wrong.join("; ")
            ),
        )
    })
}

fn placement(pod: &PodSpec, e: &Expect) -> Vec<Finding> {
    let mut out = Vec::new();
    let key = model_label_key(&e.model);
    let node = pod.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
    let required = pod
        .node_selector
        .as_ref()
        .is_some_and(|s| s.contains_key(&key))
        || node
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|r| {
                r.node_selector_terms
                    .iter()
                    .flat_map(|t| t.match_expressions.iter().flatten())
                    .any(|x| x.key == key)
            });
    let preferred = node
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|p| {
            p.iter()
                .flat_map(|t| t.preference.match_expressions.iter().flatten())
                .any(|x| {
                    x.key == key
                        && (x.operator == "Exists"
                            || (x.operator == "In"
                                && x.values.iter().flatten().any(|v| v == MODEL_LABEL_READY)))
                })
        });
    if required {
        out.push(finding(
            Id::ReadyLabelRequired,
            format!("the pods require {key}: no NodePool can stamp it (the agent does, once warm), so Karpenter launches nothing: prefer it instead"),
        ));
    } else if !preferred {
        out.push(finding(
            Id::ReadyLabelNotPreferred,
            format!("no preferred node affinity for {key}={MODEL_LABEL_READY}: pods land on nodes where the model is cold"),
        ));
    }
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let gpu = tolerations.iter().any(|t| tolerates(t, GPU_RESOURCE, None));
    if !gpu {
        let equal = tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(GPU_RESOURCE));
        out.push(finding(
            Id::GpuTolerationMissing,
            if equal {
                format!("the toleration of {GPU_RESOURCE} names one value: use operator Exists (GKE and Karpenter guides taint with different values)")
            } else {
                format!("no toleration for the GPU taint: add key {GPU_RESOURCE}, operator Exists, effect NoSchedule")
            },
        ));
    }
    if tolerations
        .iter()
        .any(|t| tolerates(t, WARMING_TAINT_KEY, Some(WARMING_TAINT_VALUE)))
    {
        out.push(finding(
            Id::WarmingTaintTolerated,
            format!("a toleration lets the pods onto nodes still tainted {WARMING_TAINT_KEY} (not warm yet): drop it"),
        ));
    }
    out
}

/// Whether `t` tolerates a `NoSchedule` taint `key` (with `value`: whatever its value when
/// `None`, so only `Exists` counts).
fn tolerates(t: &Toleration, key: &str, value: Option<&str>) -> bool {
    let effect = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == "NoSchedule");
    let exists = t.operator.as_deref() == Some("Exists");
    let key_ok = match t.key.as_deref() {
        None | Some("") => exists,
        Some(k) => k == key,
    };
    let value_ok = exists || value.is_some_and(|v| t.value.as_deref() == Some(v));
    effect && key_ok && value_ok
}

fn drain(c: &Container, pod: &PodSpec, argv: &Argv) -> Vec<Finding> {
    let mut out = Vec::new();
    let shutdown = argv
        .flag("shutdown-timeout")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if shutdown <= 0 {
        out.push(finding(
            Id::ShutdownTimeoutZero,
            "--shutdown-timeout is 0 (vLLM's default): SIGTERM aborts in-flight requests: set it (e.g. 45)",
        ));
    }
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .map_or(0, |h| {
            h.sleep.as_ref().map(|s| s.seconds).unwrap_or_else(|| {
                h.exec.as_ref().map_or(0, |x| {
                    sleep_seconds(x.command.as_deref().unwrap_or_default())
                })
            })
        });
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    if grace < pre_stop + shutdown.max(0) {
        out.push(finding(
            Id::GracePeriodShort,
            format!(
                "terminationGracePeriodSeconds {grace} < preStop {pre_stop} s + --shutdown-timeout {shutdown} s: the kubelet kills the drain"
            ),
        ));
    }
    out
}

/// Seconds a probe lets a container start before it fails it.
fn allowance(p: &Probe) -> i64 {
    i64::from(p.initial_delay_seconds.unwrap_or(0))
        + i64::from(p.period_seconds.unwrap_or(10)) * i64::from(p.failure_threshold.unwrap_or(3))
}

fn startup(c: &Container, e: &Expect) -> Option<Finding> {
    let min = e.min_startup_secs;
    let (what, allows) = match (&c.startup_probe, &c.liveness_probe) {
        (Some(p), _) => ("the startup probe", allowance(p)),
        (None, Some(p)) => ("with no startup probe, the liveness probe", allowance(p)),
        (None, None) => return None,
    };
    (allows < min).then(|| {
        finding(
            Id::StartupProbeShort,
            format!("{what} allows {allows} s, less than --min-startup {min} s: a cold start is killed before it serves"),
        )
    })
}
