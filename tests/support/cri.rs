//! A small CRI client for system tests: host-network pods (no CNI) and containers in them, as
//! the kubelet would make them (its labels included), on a test containerd's socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use tonic::transport::{Channel, Endpoint};

/// A CRI runtime service client over a unix socket.
pub struct Cri {
    rt: cri::runtime_service_client::RuntimeServiceClient<Channel>,
    img: cri::image_service_client::ImageServiceClient<Channel>,
}

/// A pod made by [`Cri::run_pod`].
#[derive(Debug, Clone)]
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Uid.
    pub uid: String,
    /// Log directory.
    pub log_dir: PathBuf,
}

fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_secs(120));
    r
}

fn namespaces(pid: cri::NamespaceMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

impl Pod {
    /// The sandbox config it was run with.
    pub fn config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            log_directory: self.log_dir.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(cri::NamespaceMode::Pod)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Cri {
    /// Connects to `socket` (lazily).
    pub fn connect(socket: &Path) -> Cri {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
            tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }),
        );
        Cri {
            rt: cri::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
            img: cri::image_service_client::ImageServiceClient::new(channel),
        }
    }

    /// CRI PullImage; returns the image ref.
    pub async fn pull(&mut self, image: &str) -> anyhow::Result<String> {
        let r = self
            .img
            .pull_image(req(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await?;
        Ok(r.into_inner().image_ref)
    }

    /// The first repo digest (`name@sha256:...`) CRI reports for `image`.
    pub async fn repo_digest(&mut self, image: &str) -> anyhow::Result<String> {
        let r = self
            .img
            .image_status(req(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .await?
            .into_inner();
        r.image
            .and_then(|i| i.repo_digests.into_iter().next())
            .ok_or_else(|| anyhow::anyhow!("no repo digest for {image}"))
    }

    /// RunPodSandbox of a host-network pod logging under `log_dir`.
    pub async fn run_pod(
        &mut self,
        name: &str,
        namespace: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Pod> {
        std::fs::create_dir_all(log_dir)?;
        let mut pod = Pod {
            id: String::new(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: format!("uid-{name}"),
            log_dir: log_dir.to_path_buf(),
        };
        let r = self
            .rt
            .run_pod_sandbox(req(cri::RunPodSandboxRequest {
                config: Some(pod.config()),
                runtime_handler: String::new(),
            }))
            .await?;
        pod.id = r.into_inner().pod_sandbox_id;
        Ok(pod)
    }

    /// CreateContainer + StartContainer of `image` named `name` in `pod` (kubelet's labels),
    /// logging to `<log_dir>/<name>.log`; returns its id.
    pub async fn run_container(
        &mut self,
        pod: &Pod,
        name: &str,
        image: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<String> {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.namespace", pod.namespace.as_str()),
            ("io.kubernetes.pod.name", pod.name.as_str()),
            ("io.kubernetes.pod.uid", pod.uid.as_str()),
            ("io.kubernetes.container.name", name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                user_specified_image: image.to_string(),
                ..Default::default()
            }),
            envs: env
                .iter()
                .map(|(k, v)| cri::KeyValue {
                    key: k.to_string(),
                    value: v.clone(),
                })
                .collect(),
            labels,
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(cri::NamespaceMode::Container)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(req(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config()),
            }))
            .await?
            .into_inner()
            .container_id;
        self.rt
            .start_container(req(cri::StartContainerRequest {
                container_id: id.clone(),
            }))
            .await?;
        Ok(id)
    }

    /// CRI CheckpointContainer to `location`.
    pub async fn checkpoint(&mut self, id: &str, location: &Path) -> anyhow::Result<()> {
        self.rt
            .checkpoint_container(req(cri::CheckpointContainerRequest {
                container_id: id.to_string(),
                location: location.display().to_string(),
                timeout: 120,
            }))
            .await?;
        Ok(())
    }

    /// The container's state (1 = running) and annotations.
    pub async fn status(&mut self, id: &str) -> anyhow::Result<(i32, HashMap<String, String>)> {
        let s = self
            .rt
            .container_status(req(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            }))
            .await?
            .into_inner()
            .status
            .ok_or_else(|| anyhow::anyhow!("no status for {id}"))?;
        Ok((s.state, s.annotations))
    }

    /// Stops and removes a pod (and its containers); errors are ignored.
    pub async fn remove_pod(&mut self, pod: &Pod) {
        let _ = self
            .rt
            .stop_pod_sandbox(req(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            }))
            .await;
        let _ = self
            .rt
            .remove_pod_sandbox(req(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            }))
            .await;
    }
}
