//! A throwaway CRI client for `scripts/spike/criu-cri.sh` (issue 17's spike): the few CRI calls
//! that script needs, one per invocation, against containerd's socket. There is no crictl
//! package in Debian, so this stands in for it. Every pod it makes uses the host network
//! namespace (no CNI) and its own pid namespace per container, as the kubelet does by default.
//!
//! ```text
//! cri-spike SOCKET version
//! cri-spike SOCKET pull IMAGE                         -> image ref
//! cri-spike SOCKET runp NAME UID LOGDIR               -> sandbox id
//! cri-spike SOCKET create POD NAME UID LOGDIR CTR IMAGE LOGPATH [KEY=VALUE]...  -> container id
//! cri-spike SOCKET start|stop|rm ID
//! cri-spike SOCKET status ID                          -> ContainerStatus as JSON
//! cri-spike SOCKET checkpoint ID PATH TIMEOUT_S
//! cri-spike SOCKET stopp|rmp POD
//! ```
//!
//! `create` rebuilds the pod config from NAME, UID and LOGDIR, which must be those given to
//! `runp`. Each call prints how long the RPC took on stderr.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

const NAMESPACE: &str = "coldstart-spike";

fn pod_config(name: &str, uid: &str, log_dir: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: NAMESPACE.to_string(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: log_dir.to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    target_id: String::new(),
                    userns_options: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn connect(socket: &str) -> anyhow::Result<Channel> {
    let socket = socket.to_string();
    // The URI is required by tonic but unused: the connector dials the unix socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connect to the CRI socket")
}

fn arg(args: &[String], i: usize, what: &str) -> anyhow::Result<String> {
    args.get(i)
        .cloned()
        .with_context(|| format!("missing argument {i}: {what}"))
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = arg(&args, 0, "SOCKET")?;
    let cmd = arg(&args, 1, "COMMAND")?;
    let channel = connect(&socket).await?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut img = ImageServiceClient::new(channel);
    let t = Duration::from_secs(120);
    let started = Instant::now();
    match cmd.as_str() {
        "version" => {
            let v = rt
                .version(request(cri::VersionRequest::default(), t))
                .await?
                .into_inner();
            println!(
                "{} {} (CRI {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version
            );
        }
        "pull" => {
            let image = arg(&args, 2, "IMAGE")?;
            let r = img
                .pull_image(request(
                    cri::PullImageRequest {
                        image: Some(cri::ImageSpec {
                            image,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    t,
                ))
                .await?
                .into_inner();
            println!("{}", r.image_ref);
        }
        "runp" => {
            let config = pod_config(
                &arg(&args, 2, "NAME")?,
                &arg(&args, 3, "UID")?,
                &arg(&args, 4, "LOGDIR")?,
            );
            let r = rt
                .run_pod_sandbox(request(
                    cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    },
                    t,
                ))
                .await?
                .into_inner();
            println!("{}", r.pod_sandbox_id);
        }
        "create" => {
            let pod = arg(&args, 2, "POD")?;
            let sandbox = pod_config(
                &arg(&args, 3, "NAME")?,
                &arg(&args, 4, "UID")?,
                &arg(&args, 5, "LOGDIR")?,
            );
            let name = arg(&args, 6, "CTR")?;
            let image = arg(&args, 7, "IMAGE")?;
            let log_path = arg(&args, 8, "LOGPATH")?;
            let mut envs = Vec::new();
            for kv in &args[9.min(args.len())..] {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("environment entry {kv:?} is not KEY=VALUE");
                };
                envs.push(cri::KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
            let config = cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata { name, attempt: 0 }),
                // As the kubelet does: the restore records the user-specified name as the
                // `checkpointImage` annotation.
                image: Some(cri::ImageSpec {
                    user_specified_image: image.clone(),
                    image,
                    ..Default::default()
                }),
                envs,
                log_path,
                linux: Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(cri::NamespaceOption {
                            network: cri::NamespaceMode::Node as i32,
                            pid: cri::NamespaceMode::Container as i32,
                            ipc: cri::NamespaceMode::Pod as i32,
                            target_id: String::new(),
                            userns_options: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let r = rt
                .create_container(request(
                    cri::CreateContainerRequest {
                        pod_sandbox_id: pod,
                        config: Some(config),
                        sandbox_config: Some(sandbox),
                    },
                    t,
                ))
                .await?
                .into_inner();
            println!("{}", r.container_id);
        }
        "start" => {
            let container_id = arg(&args, 2, "ID")?;
            rt.start_container(request(cri::StartContainerRequest { container_id }, t))
                .await?;
        }
        "stop" => {
            let container_id = arg(&args, 2, "ID")?;
            rt.stop_container(request(
                cri::StopContainerRequest {
                    container_id,
                    timeout: 5,
                },
                t,
            ))
            .await?;
        }
        "rm" => {
            let container_id = arg(&args, 2, "ID")?;
            rt.remove_container(request(cri::RemoveContainerRequest { container_id }, t))
                .await?;
        }
        "status" => {
            let container_id = arg(&args, 2, "ID")?;
            let r = rt
                .container_status(request(
                    cri::ContainerStatusRequest {
                        container_id,
                        verbose: false,
                    },
                    t,
                ))
                .await?
                .into_inner();
            println!("{}", serde_json::to_string(&r.status)?);
        }
        "checkpoint" => {
            let container_id = arg(&args, 2, "ID")?;
            let location = arg(&args, 3, "PATH")?;
            let secs: u64 = arg(&args, 4, "TIMEOUT_S")?.parse().context("TIMEOUT_S")?;
            // containerd 2.1 does not read `timeout`; the gRPC deadline is what bounds it.
            rt.checkpoint_container(request(
                cri::CheckpointContainerRequest {
                    container_id,
                    location,
                    timeout: i64::try_from(secs)?,
                },
                Duration::from_secs(secs),
            ))
            .await?;
        }
        "stopp" => {
            let pod_sandbox_id = arg(&args, 2, "POD")?;
            rt.stop_pod_sandbox(request(cri::StopPodSandboxRequest { pod_sandbox_id }, t))
                .await?;
        }
        "rmp" => {
            let pod_sandbox_id = arg(&args, 2, "POD")?;
            rt.remove_pod_sandbox(request(cri::RemovePodSandboxRequest { pod_sandbox_id }, t))
                .await?;
        }
        other => bail!("unknown command {other:?}"),
    }
    eprintln!("cri-spike: {cmd} took {} ms", started.elapsed().as_millis());
    Ok(())
}
