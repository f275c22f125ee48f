//! What every write goes through in the store, whoever makes it (the API, the handle, a
//! patch, an apply, a status write): [`admit`] before it is stored (built-in defaults and
//! checks, then the CRD schema: pruning, defaulting, validation, CEL rules), and [`settle`]
//! after (a written CRD registers its types; garbage collection of objects whose owners are
//! gone).

use serde_json::Value;

use crate::error::ApiError;
use crate::store::Store;
use crate::{builtin, crd, field, gc};

/// Defaults and validates `obj`, the object a write would store (`old`: the stored one on
/// update); an error is the apiserver's 422.
pub(crate) fn admit(
    store: &Store,
    ty: usize,
    old: Option<&Value>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let t = &store.types[ty];
    builtin::default(t, obj);
    let mut errs = builtin::check(t, old, obj);
    if let Some(schema) = store.schema(ty) {
        errs.extend(schema.admit(obj, old));
    }
    if crd::is_crd(t) {
        errs.extend(crd::validate(obj));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Err(field::invalid(&t.group, &t.kind, name, &errs))
}

/// After `obj` of type `ty` was stored: registers a CRD, collects garbage.
pub(crate) fn settle(store: &mut Store, ty: usize, obj: &Value) {
    if crd::is_crd(&store.types[ty]) {
        store.register_crd(obj);
    }
    gc::sweep(store);
}

/// After `obj` of type `ty` was deleted.
pub(crate) fn settle_delete(store: &mut Store, ty: usize, obj: &Value) {
    if crd::is_crd(&store.types[ty]) {
        store.forget_crd(obj);
    }
    gc::sweep(store);
}
