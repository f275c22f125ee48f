//! Where cluster mode reads the credentials a ColdModel names: Secrets in the agent's own
//! namespace (none are read anywhere else), else the agent's node-wide fallbacks.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{DEFAULT_TOKEN_KEY, DOCKERCONFIGJSON_KEY};
use crate::api::ColdModel;
use crate::images::{DockerConfig, ImageRef, RegistryAuth};
use crate::warmer::{CredentialError, Credentials};

/// Secrets in the agent's namespace, plus the agent's own fallbacks.
pub(super) struct SecretCredentials {
    pub(super) secrets: Option<Api<Secret>>,
    pub(super) fallback: Option<DockerConfig>,
}

impl SecretCredentials {
    async fn read(&self, name: &str, key: &str) -> Result<Vec<u8>, CredentialError> {
        let Some(api) = &self.secrets else {
            return Err(CredentialError(format!(
                "secret {name} is named but the agent has no namespace configured to read it from"
            )));
        };
        let secret = api
            .get(name)
            .await
            .map_err(|e| CredentialError(format!("reading secret {name}: {e}")))?;
        let data = secret.data.unwrap_or_default();
        data.get(key)
            .map(|b| b.0.clone())
            .ok_or_else(|| CredentialError(format!("secret {name} has no key {key:?}")))
    }
}

impl Credentials for SecretCredentials {
    async fn hub_token(&self, model: &ColdModel) -> Result<Option<String>, CredentialError> {
        let Some(r) = &model.spec.token_secret_ref else {
            return Ok(None);
        };
        let key = r.key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY);
        let bytes = self.read(&r.name, key).await?;
        let token = String::from_utf8(bytes)
            .map_err(|_| CredentialError(format!("secret {} key {key}: not UTF-8", r.name)))?;
        Ok(Some(token.trim().to_string()))
    }

    async fn pull_auth(
        &self,
        model: &ColdModel,
        image: &ImageRef,
    ) -> Result<Option<RegistryAuth>, CredentialError> {
        let Some(r) = &model.spec.image_pull_secret_ref else {
            return Ok(self.fallback.as_ref().and_then(|c| c.lookup(image)));
        };
        let bytes = self.read(&r.name, DOCKERCONFIGJSON_KEY).await?;
        let cfg = DockerConfig::from_json(&bytes)
            .map_err(|e| CredentialError(format!("secret {}: {e}", r.name)))?;
        Ok(cfg.lookup(image))
    }
}
