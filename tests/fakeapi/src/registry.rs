//! Which resources the fake serves: group, version, plural, kind, scope and status subresource.
//! Adding a resource is one line in [`default_resources`] or one entry in `Options::resources`.

/// How a resource treats `.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMode {
    /// No status subresource: `.status` is an ordinary field.
    Plain,
    /// A `status` subresource: writes to the main resource keep the stored `.status`, writes to
    /// `/status` change only `.status`. `keep_on_create` keeps a `.status` sent on create (as
    /// nodes do); CRDs drop it.
    Subresource {
        /// Keep `.status` given at create time.
        keep_on_create: bool,
    },
}

/// One resource type the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural lowercase name used in paths, e.g. `nodes`.
    pub plural: String,
    /// Kind, e.g. `Node`.
    pub kind: String,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// Status subresource behaviour.
    pub status: StatusMode,
}

impl ResourceType {
    /// A cluster-scoped resource without a status subresource.
    pub fn cluster(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced: false,
            status: StatusMode::Plain,
        }
    }

    /// A namespaced resource without a status subresource.
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        ResourceType {
            namespaced: true,
            ..Self::cluster(group, version, plural, kind)
        }
    }

    /// Adds a status subresource.
    pub fn with_status(mut self, keep_on_create: bool) -> Self {
        self.status = StatusMode::Subresource { keep_on_create };
        self
    }

    /// `apiVersion` of its objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as Kubernetes names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether writes to `/status` are served.
    pub fn has_status(&self) -> bool {
        matches!(self.status, StatusMode::Subresource { .. })
    }

    /// Whether `name` (`plural` or `plural.group`) names this resource.
    pub(crate) fn is_named(&self, name: &str) -> bool {
        name == self.plural || name == self.group_resource()
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";

/// The resources the agent and `coldctl` use, and the RBAC and admission objects.
pub fn default_resources() -> Vec<ResourceType> {
    vec![
        ResourceType::cluster("", "v1", "nodes", "Node").with_status(true),
        ResourceType::namespaced("", "v1", "secrets", "Secret"),
        // Status kept on create, as for nodes: tests create pods as the kubelet would see them.
        ResourceType::namespaced("", "v1", "pods", "Pod").with_status(true),
        ResourceType::namespaced("", "v1", "events", "Event"),
        // What `coldctl check deployment/NAME` reads.
        ResourceType::namespaced("apps", "v1", "deployments", "Deployment").with_status(true),
        ResourceType::namespaced("events.k8s.io", "v1", "events", "Event"),
        // The agents' compile-cache push claims.
        ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "Lease"),
        ResourceType::cluster("coldstart.dev", "v1alpha1", "coldmodels", "ColdModel"),
        ResourceType::cluster("coldstart.dev", "v1alpha1", "coldnodes", "ColdNode")
            .with_status(false),
        // CRDs as objects: writing one gives its types their schema (`crd.rs`).
        crate::crd::resource_type(),
        // Karpenter's, for the agent's `--deadline-action replace`.
        ResourceType::cluster("karpenter.sh", "v1", "nodeclaims", "NodeClaim"),
        // What the fake enforces once security is on (`FakeApi::enforce_security`).
        ResourceType::namespaced(RBAC, "v1", "roles", "Role"),
        ResourceType::namespaced(RBAC, "v1", "rolebindings", "RoleBinding"),
        ResourceType::cluster(RBAC, "v1", "clusterroles", "ClusterRole"),
        ResourceType::cluster(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding"),
        ResourceType::cluster(
            ADMISSION,
            "v1",
            "validatingadmissionpolicies",
            "ValidatingAdmissionPolicy",
        )
        .with_status(false),
        ResourceType::cluster(
            ADMISSION,
            "v1",
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
        ),
    ]
}
