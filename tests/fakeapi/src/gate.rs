//! What stands between an authenticated request and the store once the fake enforces
//! security: the RBAC check (403) and admission (the policies' answers). Without an
//! authenticated user (security off) both let everything through.

use serde_json::Value;

use crate::Shared;
use crate::admission::{self, Request};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::rbac::{Attributes, Rbac};
use crate::registry::ResourceType;
use crate::store::Store;

/// One request's identity and target.
pub(crate) struct Gate<'a> {
    /// None when the fake does not enforce security.
    pub(crate) user: Option<&'a UserInfo>,
    pub(crate) ty: &'a ResourceType,
    /// `status` or empty.
    pub(crate) subresource: &'a str,
    /// Namespace, empty for cluster-scoped requests.
    pub(crate) namespace: &'a str,
}

impl Gate<'_> {
    /// 403 unless the user's roles grant `verb` on the target (`name` may be empty).
    pub(crate) fn authorize(
        &self,
        shared: &Shared,
        verb: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(user) = self.user else {
            return Ok(());
        };
        let attrs = Attributes {
            user,
            verb,
            group: &self.ty.group,
            resource: &self.ty.plural,
            subresource: self.subresource,
            name,
            namespace: self.namespace,
        };
        let rbac = Rbac::load(&shared.lock_store());
        if rbac.allows(&attrs) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                &self.ty.group,
                &self.ty.plural,
                name,
                &attrs.refusal(),
            ))
        }
    }

    /// Admission for a write with `operation` (`CREATE`, `UPDATE`, `DELETE`), as a store check.
    pub(crate) fn admit(
        &self,
        store: &Store,
        operation: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(user) = self.user else {
            return Ok(());
        };
        let name = new
            .or(old)
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        admission::admit(
            store,
            &Request {
                user,
                operation,
                ty: self.ty,
                subresource: self.subresource,
                name,
                namespace: self.namespace,
                object: new,
                old,
            },
        )
    }
}
