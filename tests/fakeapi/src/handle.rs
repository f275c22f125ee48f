//! [`FakeApi`]'s methods: start and stop, objects, knobs, the request log, kubeconfig.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::faults::{Knobs, Outage, RequestRecord};
use crate::store::{Part, Store};
use crate::{FakeApi, Lifetime, Listening, Options, Shared, routes, server};

impl FakeApi {
    /// Binds the listener and serves on the current tokio runtime.
    pub async fn start(opts: Options) -> anyhow::Result<FakeApi> {
        Self::start_on(opts, tokio::runtime::Handle::current(), None)
    }

    /// Starts the fake on a runtime of its own, on its own thread (for synchronous tests and
    /// programs). The thread ends at [`FakeApi::shutdown`] or when the last handle is dropped.
    pub fn start_blocking(opts: Options) -> anyhow::Result<FakeApi> {
        let root = CancellationToken::new();
        let (handle, thread) = coldstart_fakeserve::runtime_thread("fake-apiserver", root.clone())?;
        match Self::start_on(opts, handle, Some(root.clone())) {
            Ok(api) => {
                api.life.server.own_thread(thread);
                Ok(api)
            }
            Err(e) => {
                root.cancel();
                let _ = thread.join();
                Err(e)
            }
        }
    }

    fn start_on(
        opts: Options,
        rt: tokio::runtime::Handle,
        root: Option<CancellationToken>,
    ) -> anyhow::Result<FakeApi> {
        let root = root.unwrap_or_default();
        let listener = server::bind(opts.addr, &rt)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.resources, opts.history)),
            identities: Mutex::new(crate::auth::Identities::default()),
            knobs: Knobs::default(),
            addr,
            bookmark_interval: opts.bookmark_interval,
        });
        let router = routes::router(shared.clone());
        let conns = Arc::new(Mutex::new(root.child_token()));
        let stop = root.child_token();
        let task = server::spawn(&rt, listener, router.clone(), stop.clone(), conns.clone());
        Ok(FakeApi {
            shared,
            life: Arc::new(Lifetime {
                server: coldstart_fakeserve::ServerThread::new(root),
                listening: Mutex::new(Some(Listening { stop, task })),
                conns,
                rt,
                router,
            }),
        })
    }

    /// Stops the listener and drops every connection (idempotent).
    pub fn shutdown(&self) {
        self.life.server.stop().cancel();
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes a kubeconfig (cluster `fake` at [`FakeApi::url`], a dummy token user, current
    /// context `fake` with namespace `default`) for clients that read `KUBECONFIG`.
    pub fn kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        self.kubeconfig_with_token(path, "fake-token")
    }

    /// [`FakeApi::kubeconfig`] with the user's bearer token `token` (see [`FakeApi::add_token`]).
    pub fn kubeconfig_with_token(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic()),
            "a token of printable ASCII characters, without spaces"
        );
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: {token:?}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\npreferences: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    // ---- security ----

    /// Maps a bearer token to a user (effective once [`FakeApi::enforce_security`] is on).
    pub fn add_token(&self, token: &str, user: crate::UserInfo) {
        self.shared.lock_identities().add(token, user);
    }

    /// From now on every request needs a token given to [`FakeApi::add_token`] (else 401),
    /// is authorized by the stored RBAC objects (else 403) and, when it writes, admitted by
    /// the stored ValidatingAdmissionPolicies. Off by default: then anything goes, as before.
    /// The handle's own methods (`create`, `modify`, ...) are never checked.
    pub fn enforce_security(&self) {
        self.shared.lock_identities().enforcing = true;
    }

    // ---- objects ----

    fn type_named(store: &Store, resource: &str) -> anyhow::Result<usize> {
        store
            .type_named(resource)
            .with_context(|| format!("the fake serves no resource {resource:?}"))
    }

    /// Creates an object; its type comes from `apiVersion` and `kind`, its namespace from
    /// `metadata.namespace` (empty for cluster-scoped types). `.status` is kept as given.
    pub fn create(&self, obj: Value) -> anyhow::Result<Value> {
        let mut store = self.shared.lock_store();
        let ty = store
            .type_of(&obj)
            .context("the fake serves no resource of this apiVersion and kind")?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let status = obj.get("status").cloned();
        let created = store
            .create(ty, &ns, obj)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        match status {
            Some(s) if created.get("status") != Some(&s) => {
                let name = created["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let mut with = created;
                with["status"] = s;
                store
                    .update(ty, &ns, &name, with, Part::All)
                    .map_err(|e| anyhow::anyhow!(e.message))
            }
            _ => Ok(created),
        }
    }

    /// Creates every object of a multi-document YAML stream (e.g. `kubectl kustomize deploy`'s
    /// output) whose kind the fake serves, and skips the others; returns how many it created.
    /// A CustomResourceDefinition replaces one already installed.
    pub fn load_manifests(&self, yaml: &str) -> anyhow::Result<usize> {
        use serde::Deserialize as _;
        let mut created = 0;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let obj = Value::deserialize(doc).context("parsing a YAML document")?;
            if obj.is_null() {
                continue;
            }
            if obj["kind"] == "CustomResourceDefinition" {
                // A definition installed before (`install_crds`) is replaced, as `apply` would.
                self.install_crd(obj)?;
                created += 1;
                continue;
            }
            let served = self.shared.lock_store().type_of(&obj).is_some();
            if served {
                self.create(obj)?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Installs every CustomResourceDefinition in the `*.yaml` files of `dir` (e.g. the
    /// repository's `deploy/crds`), replacing one already installed; other documents are
    /// skipped. From then on the custom resources they define are validated, pruned and
    /// defaulted by their schemas. Answers how many CRDs it installed.
    pub fn install_crds(&self, dir: &Path) -> anyhow::Result<usize> {
        use serde::Deserialize as _;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut installed = 0;
        for path in files {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let obj = Value::deserialize(doc)
                    .with_context(|| format!("parsing {}", path.display()))?;
                if obj["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                self.install_crd(obj)
                    .with_context(|| format!("installing {}", path.display()))?;
                installed += 1;
            }
        }
        Ok(installed)
    }

    fn install_crd(&self, obj: Value) -> anyhow::Result<()> {
        let mut store = self.shared.lock_store();
        let ty = store.ensure_type(crate::crd::resource_type());
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let result = if store.get(ty, "", &name).is_ok() {
            store.update(ty, "", &name, obj, Part::All)
        } else {
            store.create(ty, "", obj)
        };
        result.map(|_| ()).map_err(|e| anyhow::anyhow!(e.message))
    }

    /// An object by resource (`plural` or `plural.group`), namespace ("" for cluster-scoped)
    /// and name.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let store = self.shared.lock_store();
        let ty = store.type_named(resource)?;
        store.get(ty, ns, name).ok()
    }

    /// Every object of a resource, in every namespace.
    pub fn list(&self, resource: &str) -> anyhow::Result<Vec<Value>> {
        let store = self.shared.lock_store();
        let ty = Self::type_named(&store, resource)?;
        let all = crate::selector::Selector::default();
        Ok(store.list(ty, None, &all, &all))
    }

    /// Changes an object directly, "as another manager" (status included), bumping its
    /// resourceVersion and notifying watches, e.g. to add a taint between a client's read and
    /// its write.
    pub fn modify(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> anyhow::Result<Value> {
        let mut store = self.shared.lock_store();
        let ty = Self::type_named(&store, resource)?;
        let mut obj = store
            .get(ty, ns, name)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        f(&mut obj);
        store
            .update(ty, ns, name, obj, Part::All)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Deletes an object directly.
    pub fn delete(&self, resource: &str, ns: &str, name: &str) -> anyhow::Result<()> {
        let mut store = self.shared.lock_store();
        let ty = Self::type_named(&store, resource)?;
        store
            .delete(ty, ns, name)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_store().rv()
    }

    /// Forgets the change history: watches resuming from any earlier resourceVersion get an
    /// `ERROR` event with a 410 `Status`, as after an etcd compaction.
    pub fn compact(&self) {
        self.shared.lock_store().compact();
    }

    /// Merges list items of field `field` (anywhere in an object) by `keys` in strategic
    /// merge and apply patches, e.g. `("models", &["name"])` for a CRD's list-map.
    pub fn merge_list_by(&self, field: &str, keys: &[&str]) {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        self.shared
            .lock_store()
            .list_keys
            .insert(field.to_string(), keys);
    }

    // ---- faults ----

    /// Starts an outage: open connections (watches included) are cut, and the listener is
    /// closed ([`Outage::Refuse`], awaited until it is) or answers 503 ([`Outage::Status503`]).
    pub async fn outage(&self, kind: Outage) {
        self.shared.knobs.set_503(kind == Outage::Status503);
        self.cut_connections();
        if kind == Outage::Refuse {
            let listening = self
                .life
                .listening
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(l) = listening {
                l.stop.cancel();
                let _ = l.task.await;
            }
        }
    }

    /// Cuts every open connection (watches included) without closing the listener.
    pub fn cut_connections(&self) {
        let mut c = self.life.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.cancel();
        *c = self.life.server.stop().child_token();
    }

    /// Ends an outage: binds the same port again if it was closed.
    pub fn restore(&self) -> anyhow::Result<()> {
        self.shared.knobs.set_503(false);
        let mut g = self
            .life
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            anyhow::ensure!(
                !self.life.server.stop().is_cancelled(),
                "the fake was shut down"
            );
            let listener = server::bind(self.shared.addr, &self.life.rt)?;
            let stop = self.life.server.stop().child_token();
            let task = server::spawn(
                &self.life.rt,
                listener,
                self.life.router.clone(),
                stop.clone(),
                self.life.conns.clone(),
            );
            *g = Some(Listening { stop, task });
        }
        Ok(())
    }

    /// Makes the next `n` writes (create, update, patch, delete; status included) to
    /// `resource` (`plural` or `plural.group`) answer 409 Conflict.
    pub fn conflict_next_writes(&self, resource: &str, n: u32) {
        self.shared.knobs.add_conflicts(resource, n);
    }

    // ---- request log ----

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.knobs.records()
    }

    /// How many requests had this verb on this resource (`nodes`, `nodes/status`, ...).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.knobs.clear();
    }
}
