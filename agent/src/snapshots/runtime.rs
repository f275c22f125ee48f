//! The node's containerd as the snapshots port uses it: CRI `CheckpointContainer`, the facts that
//! decide whether a restore can work, and the restore itself through CRI `CreateContainer` (as
//! the kubelet does when a pod names a checkpoint image). The gRPC channel is the images port's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1 as ctd;
use k8s_cri::v1 as cri;
use tonic::Request;
use tonic::transport::Channel;
use tracing::instrument;

use super::key::CompatKey;
use super::restore::{RestoreSupport, restore_support};
use super::{Error, one_line};
use crate::images::{channel, clean_version};

/// Where `criu` is looked for when none is configured: containerd's usual PATH.
pub const DEFAULT_CRIU_SEARCH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to reach and read the node's containerd for snapshots.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// containerd's gRPC socket (CRI is served on it too).
    pub socket: PathBuf,
    /// containerd's config file, read for `enable_experimental_restore_via_create`.
    pub config_file: PathBuf,
    /// Snapshotter CRI unpacks into (`overlayfs`).
    pub snapshotter: String,
    /// Directories searched for `criu` (containerd's PATH, which is not ours to read).
    pub criu_search: Vec<PathBuf>,
    /// The host's root as this process sees it (`/host` in the DaemonSet): the search
    /// directories are looked up under it, and a host CRIU the agent's own filesystem cannot
    /// run is run through the host's dynamic loader. `None`: this process's root.
    pub criu_root: Option<PathBuf>,
    /// containerd's root as this process sees it; a checkpoint layer blob written there is made
    /// readable by root only (containerd writes blobs 0444). `None`: left as containerd made it.
    pub containerd_root: Option<PathBuf>,
    /// Timeout of short calls.
    pub call_timeout: Duration,
}

impl RuntimeConfig {
    /// Defaults for a node.
    pub fn new(socket: PathBuf) -> Self {
        RuntimeConfig {
            socket,
            config_file: PathBuf::from("/etc/containerd/config.toml"),
            snapshotter: "overlayfs".to_string(),
            criu_search: std::env::split_paths(DEFAULT_CRIU_SEARCH).collect(),
            criu_root: None,
            containerd_root: Some(PathBuf::from("/var/lib/containerd")),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The pod a restored container goes into (already running, host network) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTarget {
    /// The pod sandbox's id.
    pub sandbox_id: String,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid.
    pub uid: String,
    /// The pod's log directory.
    pub log_directory: PathBuf,
    /// Container name.
    pub container: String,
    /// Log path relative to the log directory.
    pub log_path: String,
}

/// Snapshots over a containerd socket.
#[derive(Debug, Clone)]
pub struct ContainerdSnapshots {
    pub(super) cfg: RuntimeConfig,
    pub(super) channel: Channel,
}

impl ContainerdSnapshots {
    /// A client for `cfg.socket`; connects lazily.
    pub fn new(cfg: RuntimeConfig) -> Self {
        let channel = channel(&cfg.socket);
        ContainerdSnapshots { cfg, channel }
    }

    pub(super) fn cri(&self) -> cri::runtime_service_client::RuntimeServiceClient<Channel> {
        cri::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
    }

    /// A request in containerd's `k8s.io` namespace with the short-call timeout.
    pub(super) fn ns<T>(&self, msg: T) -> Request<T> {
        crate::images::in_k8s_namespace(msg, self.cfg.call_timeout)
    }

    pub(super) fn rpc(op: &'static str) -> impl Fn(tonic::Status) -> Error {
        move |s| Error::Runtime {
            op,
            reason: one_line(s.message()),
        }
    }

    /// containerd's version, the restore switch from its config file, and CRIU's version.
    #[instrument(skip_all, err(level = "debug"))]
    pub async fn support(&self) -> Result<RestoreSupport, Error> {
        let mut req = Request::new(());
        req.set_timeout(self.cfg.call_timeout);
        let version = ctd::version_client::VersionClient::new(self.channel.clone())
            .version(req)
            .await
            .map_err(|s| Error::Runtime {
                op: "version",
                reason: format!(
                    "{} (socket {})",
                    one_line(s.message()),
                    self.cfg.socket.display()
                ),
            })?
            .into_inner()
            .version;
        let switch = match tokio::fs::read_to_string(&self.cfg.config_file).await {
            Ok(text) => restore_switch(&text),
            Err(_) => None,
        };
        Ok(RestoreSupport {
            containerd: clean_version(&version),
            restore_via_create: switch,
            criu: super::criu::find(&self.cfg.criu_search, self.cfg.criu_root.as_deref()).await,
        })
    }

    /// CRI `CheckpointContainer` of a running container to `location`, which must not exist
    /// (containerd opens it without `O_TRUNC`). Only the gRPC deadline bounds the call.
    #[instrument(skip_all, fields(container = %container_id), err(level = "debug"))]
    pub async fn checkpoint(
        &self,
        container_id: &str,
        location: &Path,
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut req = Request::new(cri::CheckpointContainerRequest {
            container_id: container_id.to_string(),
            location: location.display().to_string(),
            timeout: timeout.as_secs() as i64,
        });
        req.set_timeout(timeout);
        self.cri()
            .checkpoint_container(req)
            .await
            .map_err(Self::rpc("checkpoint container"))?;
        Ok(())
    }

    /// The id of the running container `container` of pod `namespace/pod`, by the labels the
    /// kubelet sets.
    #[instrument(skip_all, fields(pod = %pod, container = %container), err(level = "debug"))]
    pub async fn container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, Error> {
        let labels = [
            ("io.kubernetes.pod.namespace", namespace),
            ("io.kubernetes.pod.name", pod),
            ("io.kubernetes.container.name", container),
        ];
        let filter = cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mut req = Request::new(cri::ListContainersRequest {
            filter: Some(filter),
        });
        req.set_timeout(self.cfg.call_timeout);
        let list = self
            .cri()
            .list_containers(req)
            .await
            .map_err(Self::rpc("list containers"))?
            .into_inner()
            .containers;
        match list.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(Error::Invalid {
                what: "container",
                value: format!("{namespace}/{pod}/{container}"),
                reason: "no running container of that name on this node".to_string(),
            }),
            _ => Err(Error::Invalid {
                what: "container",
                value: format!("{namespace}/{pod}/{container}"),
                reason: format!("{} running containers match", list.len()),
            }),
        }
    }

    /// Restores a snapshot whose key is `recorded` into `target` from checkpoint image `image`,
    /// after checking that this node can restore at all and that `here` (this node's key)
    /// matches; a field that differs refuses by name.
    pub async fn restore_checked(
        &self,
        recorded: &CompatKey,
        here: &CompatKey,
        target: &RestoreTarget,
        image: &str,
    ) -> Result<String, Error> {
        restore_support(&self.support().await?)?;
        recorded.check(here)?;
        self.restore(target, image).await
    }

    /// Restores into `target`'s pod: CRI `CreateContainer` naming the checkpoint image, then
    /// `StartContainer` (where the shim runs CRIU). Returns the new container's id.
    #[instrument(skip_all, fields(image = %image, pod = %target.pod), err(level = "debug"))]
    pub async fn restore(&self, target: &RestoreTarget, image: &str) -> Result<String, Error> {
        let labels = kube_labels(target);
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: target.container.clone(),
                attempt: 0,
            }),
            // As the kubelet does; containerd records it as the `checkpointImage` annotation.
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                user_specified_image: image.to_string(),
                ..Default::default()
            }),
            labels: labels.clone(),
            log_path: target.log_path.clone(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(host_network(cri::NamespaceMode::Container)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut req = Request::new(cri::CreateContainerRequest {
            pod_sandbox_id: target.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config(target)),
        });
        req.set_timeout(self.cfg.call_timeout);
        let id = self
            .cri()
            .create_container(req)
            .await
            .map_err(Self::rpc("create container from checkpoint"))?
            .into_inner()
            .container_id;
        let mut req = Request::new(cri::StartContainerRequest {
            container_id: id.clone(),
        });
        req.set_timeout(self.cfg.call_timeout);
        self.cri()
            .start_container(req)
            .await
            .map_err(Self::rpc("start container (restore)"))?;
        Ok(id)
    }
}

impl ContainerdSnapshots {
    /// The manifest digest image `name` names in `k8s.io`, `None` when there is no such image.
    #[instrument(skip_all, fields(image = %name), err(level = "debug"))]
    pub async fn image_target(&self, name: &str) -> Result<Option<String>, Error> {
        let got = ctd::images_client::ImagesClient::new(self.channel.clone())
            .get(self.ns(ctd::GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        match got {
            Ok(r) => Ok(r
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| t.digest)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Self::rpc("get image")(s)),
        }
    }

    /// Deletes image `name` from `k8s.io` (its content goes with containerd's next GC);
    /// absent is fine. Returns whether it existed.
    #[instrument(skip_all, fields(image = %name), err(level = "debug"))]
    pub async fn remove_image(&self, name: &str) -> Result<bool, Error> {
        let deleted = ctd::images_client::ImagesClient::new(self.channel.clone())
            .delete(self.ns(ctd::DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                target: None,
            }))
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Self::rpc("delete image")(s)),
        }
    }
}

/// The labels the kubelet puts on a pod's containers (and which [`ContainerdSnapshots::container_id`]
/// looks for).
pub fn kube_labels(target: &RestoreTarget) -> std::collections::HashMap<String, String> {
    [
        ("io.kubernetes.pod.namespace", &target.namespace),
        ("io.kubernetes.pod.name", &target.pod),
        ("io.kubernetes.pod.uid", &target.uid),
        ("io.kubernetes.container.name", &target.container),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// Host network (no CNI), pod IPC, `pid` as given.
pub fn host_network(pid: cri::NamespaceMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

/// The sandbox config of a host-network pod, as RunPodSandbox got it.
pub fn sandbox_config(target: &RestoreTarget) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: target.pod.clone(),
            uid: target.uid.clone(),
            namespace: target.namespace.clone(),
            attempt: 0,
        }),
        log_directory: target.log_directory.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_network(cri::NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `enable_experimental_restore_via_create` in `[plugins."io.containerd.cri.v1.runtime"]`.
pub fn restore_switch(config: &str) -> Option<bool> {
    let doc: toml::Table = config.parse().ok()?;
    doc.get("plugins")?
        .get("io.containerd.cri.v1.runtime")?
        .get("enable_experimental_restore_via_create")?
        .as_bool()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_is_read_from_the_cri_runtime_table() {
        let on = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  enable_experimental_restore_via_create = true\n";
        assert_eq!(restore_switch(on), Some(true));
        assert_eq!(restore_switch("version = 3\n"), None);
        assert_eq!(restore_switch("not toml ["), None);
    }
}
