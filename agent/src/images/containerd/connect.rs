//! The connection to containerd every port shares: one lazily connected gRPC channel to its
//! socket (CRI is served on the same one) and requests in CRI's `k8s.io` namespace.

use std::path::Path;
use std::time::Duration;

use tonic::Request;
use tonic::transport::{Channel, Endpoint};

use super::K8S_NAMESPACE;

/// `msg` as a request in containerd's `k8s.io` namespace (CRI's), bounded by `timeout`; every
/// port that talks to containerd's own API sends through this.
pub(crate) fn in_k8s_namespace<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
    );
    req.set_timeout(timeout);
    req
}

/// A gRPC channel to containerd's socket (CRI is served on the same one), shared by every port
/// that talks to containerd. Connects lazily and reconnects after a containerd restart.
pub(crate) fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the unix socket.
    let endpoint = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }))
}
