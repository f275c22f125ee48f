//! `coldctl check` on the real example (deploy/examples/vllm/base, deploy/examples/
//! coldmodel-qwen.yaml): clean as committed, and each broken copy yields exactly its finding.

use std::collections::BTreeSet;
use std::path::Path;

use coldstart_agent::api::ColdModel;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::findings::{Expect, Id, check, pick_container};

const DEPLOYMENT: &str = include_str!("../../../../deploy/examples/vllm/base/deployment.yaml");
const COLDMODEL: &str = include_str!("../../../../deploy/examples/coldmodel-qwen.yaml");
const COMMIT: &str = "7ae557604adf67be50417f59c2c2f167def9a775";

fn example() -> Value {
    serde_yaml::from_str(DEPLOYMENT).unwrap()
}

fn model() -> ColdModel {
    serde_yaml::from_str(COLDMODEL).unwrap()
}

fn expect(model: &ColdModel) -> Expect {
    Expect::new(model, Path::new("/var/lib/coldstart"), BTreeSet::new(), 600).unwrap()
}

fn ids_with(doc: &Value, e: &Expect) -> Vec<Id> {
    let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let c = pick_container(&pod, None, e).unwrap();
    let found = check(&d, c, e);
    for f in &found {
        assert!(!f.message.is_empty() && !f.message.contains('\n'), "{f:?}");
    }
    found.into_iter().map(|f| f.id).collect()
}

fn ids(doc: &Value) -> Vec<Id> {
    ids_with(doc, &expect(&model()))
}

fn pod(doc: &mut Value) -> &mut Value {
    &mut doc["spec"]["template"]["spec"]
}

fn vllm(doc: &mut Value) -> &mut Value {
    &mut pod(doc)["containers"][0]
}

/// Removes the env var `name` from the vLLM container.
fn unset(doc: &mut Value, name: &str) {
    let env = vllm(doc)["env"].as_array_mut().unwrap();
    let before = env.len();
    env.retain(|e| e["name"] != name);
    assert_eq!(env.len() + 1, before, "{name} was in the example");
}

fn set_env(doc: &mut Value, name: &str, value: &str) {
    for e in vllm(doc)["env"].as_array_mut().unwrap() {
        if e["name"] == name {
            e["value"] = json!(value);
        }
    }
}

/// Replaces the vLLM argument starting with `prefix` by `with` (none: removes it).
fn arg(doc: &mut Value, prefix: &str, with: Option<&str>) {
    let args = vllm(doc)["args"].as_array_mut().unwrap();
    let i = args
        .iter()
        .position(|a| a.as_str().unwrap().starts_with(prefix))
        .unwrap();
    match with {
        Some(w) => args[i] = json!(w),
        None => {
            args.remove(i);
        }
    }
}

fn mount(doc: &mut Value, name: &str) -> Value {
    let mounts = vllm(doc)["volumeMounts"].as_array_mut().unwrap();
    mounts.iter().find(|m| m["name"] == name).unwrap().clone()
}

fn edit_mount(doc: &mut Value, name: &str, f: impl Fn(&mut Value)) {
    for m in vllm(doc)["volumeMounts"].as_array_mut().unwrap() {
        if m["name"] == name {
            f(m);
        }
    }
}

fn edit_volume(doc: &mut Value, name: &str, f: impl Fn(&mut Value)) {
    for v in pod(doc)["volumes"].as_array_mut().unwrap() {
        if v["name"] == name {
            f(v);
        }
    }
}

#[test]
fn the_example_starts_warm() {
    assert_eq!(ids(&example()), Vec::<Id>::new());
    // The same with the commit known only from the nodes (a ColdModel on a branch).
    let mut m = model();
    m.spec.revision = Some("main".into());
    let mut e = expect(&m);
    e.warmed = BTreeSet::from([COMMIT.to_string()]);
    assert_eq!(ids_with(&example(), &e), Vec::<Id>::new());
}

type Breakage = (&'static str, fn(&mut Value), Id);

#[test]
fn each_broken_deployment_yields_exactly_its_finding() {
    let table: Vec<Breakage> = vec![
        (
            "no model label",
            |d| {
                d["spec"]["template"]["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("coldstart.dev/model");
            },
            Id::ModelLabelMissing,
        ),
        (
            "another image",
            |d| {
                vllm(d)["image"] = json!("vllm/vllm-openai:v0.32.0");
            },
            Id::ImageMismatch,
        ),
        (
            "another model string",
            |d| {
                arg(d, "Qwen/", Some("qwen/qwen2.5-0.5b-instruct"));
            },
            Id::ModelMismatch,
        ),
        (
            "no revision",
            |d| arg(d, "--revision", None),
            Id::RevisionUnpinned,
        ),
        (
            "a branch",
            |d| arg(d, "--revision", Some("--revision=main")),
            Id::RevisionUnpinned,
        ),
        (
            "another commit",
            |d| {
                arg(
                    d,
                    "--revision",
                    Some("--revision=0000000000000000000000000000000000000000"),
                );
            },
            Id::RevisionMismatch,
        ),
        (
            "no HF_HUB_CACHE",
            |d| unset(d, "HF_HUB_CACHE"),
            Id::HubCacheMissing,
        ),
        (
            "Hub cache not mounted",
            |d| {
                let m = mount(d, "hub-cache");
                vllm(d)["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|x| *x != m);
            },
            Id::HubCacheMissing,
        ),
        (
            "another host directory",
            |d| {
                edit_volume(d, "hub-cache", |v| {
                    v["hostPath"]["path"] = json!("/data/hf")
                });
            },
            Id::HubCacheMissing,
        ),
        (
            "Hub cache writable",
            |d| {
                edit_mount(d, "hub-cache", |m| {
                    m.as_object_mut().unwrap().remove("readOnly");
                });
            },
            Id::HubCacheWritable,
        ),
        (
            "offline unset",
            |d| unset(d, "HF_HUB_OFFLINE"),
            Id::HubOfflineUnset,
        ),
        (
            "offline 0",
            |d| set_env(d, "HF_HUB_OFFLINE", "0"),
            Id::HubOfflineUnset,
        ),
        (
            "one compile variable unset",
            |d| unset(d, "TRITON_CACHE_DIR"),
            Id::CompileCacheDiffers,
        ),
        (
            "one compile variable elsewhere",
            |d| {
                set_env(d, "VLLM_CACHE_ROOT", "/root/.cache/vllm");
            },
            Id::CompileCacheDiffers,
        ),
        (
            "another model's compile cache",
            |d| {
                edit_volume(d, "coldstart-compile-cache", |v| {
                    v["hostPath"]["path"] = json!("/var/lib/coldstart/compile/models/other");
                });
            },
            Id::CompileCacheDiffers,
        ),
        (
            "no compile cache at all",
            |d| {
                for name in coldstart_agent::caches::layout::POD_ENV_NAMES {
                    unset(d, name);
                }
                let m = mount(d, "coldstart-compile-cache");
                vllm(d)["volumeMounts"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|x| *x != m);
            },
            Id::CompileCacheMissing,
        ),
        (
            "no ready preference",
            |d| {
                pod(d)["affinity"]["nodeAffinity"]
                    .as_object_mut()
                    .unwrap()
                    .remove("preferredDuringSchedulingIgnoredDuringExecution");
            },
            Id::ReadyLabelNotPreferred,
        ),
        (
            "ready label required",
            |d| {
                pod(d)["nodeSelector"] =
                    json!({"coldstart.dev/model.qwen--qwen2-5-0-5b-instruct": "ready"});
            },
            Id::ReadyLabelRequired,
        ),
        (
            "ready label required by affinity",
            |d| {
                let pref = pod(d)["affinity"]["nodeAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"].clone();
                pod(d)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"] = json!([pref]);
            },
            Id::ReadyLabelRequired,
        ),
        (
            "no GPU toleration",
            |d| {
                pod(d).as_object_mut().unwrap().remove("tolerations");
            },
            Id::GpuTolerationMissing,
        ),
        (
            "GPU toleration of one value",
            |d| {
                pod(d)["tolerations"] = json!([{"key": "nvidia.com/gpu", "operator": "Equal",
                "value": "true", "effect": "NoSchedule"}]);
            },
            Id::GpuTolerationMissing,
        ),
        (
            "warming taint tolerated",
            |d| {
                pod(d)["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "coldstart.dev/warming", "operator": "Exists"}));
            },
            Id::WarmingTaintTolerated,
        ),
        (
            "every taint tolerated",
            |d| {
                pod(d)["tolerations"] = json!([{"operator": "Exists"}]);
            },
            Id::WarmingTaintTolerated,
        ),
        (
            "no shutdown timeout",
            |d| arg(d, "--shutdown-timeout", None),
            Id::ShutdownTimeoutZero,
        ),
        (
            "shutdown timeout 0",
            |d| {
                arg(d, "--shutdown-timeout", Some("--shutdown-timeout=0"));
            },
            Id::ShutdownTimeoutZero,
        ),
        (
            "grace period under preStop + shutdown",
            |d| {
                pod(d)["terminationGracePeriodSeconds"] = json!(45);
            },
            Id::GracePeriodShort,
        ),
        (
            "grace period left at the default",
            |d| {
                pod(d)
                    .as_object_mut()
                    .unwrap()
                    .remove("terminationGracePeriodSeconds");
            },
            Id::GracePeriodShort,
        ),
        (
            "an exec preStop too long",
            |d| {
                vllm(d)["lifecycle"]["preStop"] =
                    json!({"exec": {"command": ["/bin/sh", "-c", "sleep 30"]}});
            },
            Id::GracePeriodShort,
        ),
        (
            "startup probe of 5 minutes",
            |d| {
                vllm(d)["startupProbe"]["failureThreshold"] = json!(30);
            },
            Id::StartupProbeShort,
        ),
        (
            "no startup probe, liveness of 1 minute",
            |d| {
                vllm(d).as_object_mut().unwrap().remove("startupProbe");
            },
            Id::StartupProbeShort,
        ),
    ];
    let mut failures = Vec::new();
    for (what, breaks, want) in table {
        let mut doc = example();
        breaks(&mut doc);
        let got = ids(&doc);
        if got != [want] {
            failures.push(format!("{what}: want [{want:?}], got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_model_without_compile_cache_or_image_is_checked_accordingly() {
    let mut m = model();
    m.spec.compile_cache = Some(coldstart_agent::api::CompileCachePolicy {
        enabled: Some(false),
        ..Default::default()
    });
    // Compile cache disabled: its env is not asked for.
    let mut doc = example();
    unset(&mut doc, "TRITON_CACHE_DIR");
    assert_eq!(ids_with(&doc, &expect(&m)), Vec::<Id>::new());
    // No image in the ColdModel: nothing pre-pulls the pods' image.
    m.spec.image = None;
    assert_eq!(ids_with(&example(), &expect(&m)), [Id::ImageMismatch]);
}

#[test]
fn the_min_startup_is_the_limit() {
    let mut e = expect(&model());
    e.min_startup_secs = 900;
    assert_eq!(ids_with(&example(), &e), Vec::<Id>::new());
    e.min_startup_secs = 901;
    assert_eq!(ids_with(&example(), &e), [Id::StartupProbeShort]);
}

#[test]
fn ids_are_stable_kebab_case_and_unique() {
    let all = [
        Id::ModelLabelMissing,
        Id::ImageMismatch,
        Id::ModelMismatch,
        Id::RevisionUnpinned,
        Id::RevisionMismatch,
        Id::HubCacheMissing,
        Id::HubCacheWritable,
        Id::HubOfflineUnset,
        Id::CompileCacheMissing,
        Id::CompileCacheDiffers,
        Id::ReadyLabelNotPreferred,
        Id::ReadyLabelRequired,
        Id::GpuTolerationMissing,
        Id::WarmingTaintTolerated,
        Id::ShutdownTimeoutZero,
        Id::GracePeriodShort,
        Id::StartupProbeShort,
    ];
    let names: BTreeSet<&str> = all.iter().map(|i| i.as_str()).collect();
    assert_eq!(names.len(), all.len());
    for id in all {
        assert_eq!(serde_json::to_value(id).unwrap(), json!(id.as_str()));
    }
}
