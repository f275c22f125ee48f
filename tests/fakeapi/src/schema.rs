//! A custom resource's structural schema, read from its CRD's `openAPIV3Schema`, and what
//! the apiserver does with it on every write: drop non-nullable nulls, apply `default`s,
//! prune unknown fields ([`prune`]), validate the value ([`validate`]), check
//! `x-kubernetes-list-type` sets and maps, then run the `x-kubernetes-validations` CEL rules
//! ([`rules`]), skipped when an earlier error blocks them (`hasBlockingErr`).
//!
//! The parts left out: `allOf`/`anyOf`/`oneOf`/`not` (value validations only in a structural
//! schema; ignored here), validation ratcheting, and CEL cost budgets.

mod format;
mod prune;
mod rules;
mod validate;

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::field::FieldError;
use crate::shape::Shape;

pub(crate) use rules::compile_errors;

/// One `x-kubernetes-validations` rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) rule: String,
    pub(crate) message: String,
    pub(crate) message_expression: String,
    /// Relative to the schema's field, without the leading dot.
    pub(crate) field_path: String,
    /// `FieldValueInvalid` (the default), `FieldValueForbidden`, `FieldValueRequired` or
    /// `FieldValueDuplicate`.
    pub(crate) reason: String,
    /// A transition rule: evaluated only on update, where an old value exists.
    pub(crate) uses_old_self: bool,
}

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// `object`, `array`, `string`, `integer`, `number`, `boolean`, or empty (any).
    pub(crate) ty: String,
    pub(crate) nullable: bool,
    /// The format when Kubernetes validates it (others are dropped, as the apiserver does).
    pub(crate) format: String,
    pub(crate) enumeration: Option<Vec<Value>>,
    pub(crate) required: Vec<String>,
    pub(crate) properties: BTreeMap<String, Node>,
    pub(crate) additional: Option<Box<Node>>,
    pub(crate) items: Option<Box<Node>>,
    pub(crate) pattern: Option<(String, Regex)>,
    pub(crate) min_length: Option<i64>,
    pub(crate) max_length: Option<i64>,
    pub(crate) min_items: Option<i64>,
    pub(crate) max_items: Option<i64>,
    pub(crate) min_properties: Option<i64>,
    pub(crate) max_properties: Option<i64>,
    pub(crate) minimum: Option<f64>,
    pub(crate) maximum: Option<f64>,
    pub(crate) exclusive_minimum: bool,
    pub(crate) exclusive_maximum: bool,
    pub(crate) multiple_of: Option<f64>,
    pub(crate) int_or_string: bool,
    pub(crate) preserve_unknown: bool,
    pub(crate) embedded: bool,
    pub(crate) list_type: String,
    pub(crate) list_map_keys: Vec<String>,
    pub(crate) map_type: String,
    pub(crate) default: Option<Value>,
    pub(crate) rules: Vec<Rule>,
}

fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
}

fn string(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The formats the apiserver keeps for a type (`StripUnsupportedFormatsPostProcessor`).
fn kept_format(ty: &str, format: &str) -> String {
    let keep = match ty {
        "" | "string" => format::known(format),
        "integer" => matches!(format, "int32" | "int64"),
        "number" => matches!(format, "float" | "double"),
        _ => false,
    };
    if keep {
        format.to_string()
    } else {
        String::new()
    }
}

impl Node {
    /// Reads a JSONSchemaProps object; a `pattern` that does not compile is an error.
    pub(crate) fn parse(v: &Value) -> Result<Node, String> {
        let child = |k: &str| -> Result<Option<Box<Node>>, String> {
            match v.get(k) {
                Some(c) if c.is_object() => Ok(Some(Box::new(Node::parse(c)?))),
                _ => Ok(None),
            }
        };
        let mut properties = BTreeMap::new();
        if let Some(ps) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in ps {
                properties.insert(k.clone(), Node::parse(p)?);
            }
        }
        let pattern = match v.get("pattern").and_then(Value::as_str) {
            Some(p) => {
                let re = Regex::new(p).map_err(|e| format!("pattern {p:?}: {e}"))?;
                Some((p.to_string(), re))
            }
            None => None,
        };
        let ty = string(v, "type");
        let rules = v
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .map(|rs| rs.iter().map(rules::parse).collect())
            .unwrap_or_default();
        Ok(Node {
            format: kept_format(&ty, &string(v, "format")),
            ty,
            nullable: v["nullable"] == true,
            enumeration: v.get("enum").and_then(Value::as_array).cloned(),
            required: strings(v, "required"),
            properties,
            additional: child("additionalProperties")?,
            items: child("items")?,
            pattern,
            min_length: int(v, "minLength"),
            max_length: int(v, "maxLength"),
            min_items: int(v, "minItems"),
            max_items: int(v, "maxItems"),
            min_properties: int(v, "minProperties"),
            max_properties: int(v, "maxProperties"),
            minimum: v.get("minimum").and_then(Value::as_f64),
            maximum: v.get("maximum").and_then(Value::as_f64),
            exclusive_minimum: v["exclusiveMinimum"] == true,
            exclusive_maximum: v["exclusiveMaximum"] == true,
            multiple_of: v.get("multipleOf").and_then(Value::as_f64),
            int_or_string: v["x-kubernetes-int-or-string"] == true,
            preserve_unknown: v["x-kubernetes-preserve-unknown-fields"] == true,
            embedded: v["x-kubernetes-embedded-resource"] == true,
            list_type: string(v, "x-kubernetes-list-type"),
            list_map_keys: strings(v, "x-kubernetes-list-map-keys"),
            map_type: string(v, "x-kubernetes-map-type"),
            default: v.get("default").cloned(),
            rules,
        })
    }

    /// Whether this node or one below has `x-kubernetes-validations` (the apiserver builds a
    /// CEL validator only then).
    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
            || self.properties.values().any(Node::has_rules)
            || self.additional.as_deref().is_some_and(Node::has_rules)
            || self.items.as_deref().is_some_and(Node::has_rules)
    }

    /// The schema of field `name` of this object: a property, else `additionalProperties`.
    pub(crate) fn field(&self, name: &str) -> Option<&Node> {
        self.properties.get(name).or(self.additional.as_deref())
    }
}

/// A served version's schema and what else its CRD says about it.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) root: Node,
    /// `selectableFields` as field labels (`spec.color`).
    pub(crate) selectable: Vec<String>,
}

impl Schema {
    /// Reads one CRD version's `openAPIV3Schema` and `selectableFields`.
    pub(crate) fn parse(open_api: &Value, selectable: &[Value]) -> Result<Schema, String> {
        let selectable = selectable
            .iter()
            .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
            .map(|p| p.trim_start_matches('.').to_string())
            .collect();
        Ok(Schema {
            root: Node::parse(open_api)?,
            selectable,
        })
    }

    /// How the list or map at `path` (field names from the object's root; a list item adds no
    /// step) merges: from `x-kubernetes-list-type` / `-list-map-keys` / `-map-type`. None for a
    /// scalar, a map merged field by field, or a path the schema does not describe.
    pub(crate) fn shape(&self, path: &[&str]) -> Option<Shape> {
        let mut node = &self.root;
        for step in path {
            while node.ty == "array" {
                node = node.items.as_deref()?;
            }
            node = node.field(step)?;
        }
        match node.ty.as_str() {
            "array" => Some(match node.list_type.as_str() {
                "set" => Shape::SetList,
                "map" => Shape::MapList(node.list_map_keys.clone()),
                _ => Shape::AtomicList,
            }),
            "object" if node.map_type == "atomic" => Some(Shape::AtomicMap),
            _ => None,
        }
    }

    /// Prunes and defaults `obj` in place, then validates it (`old`: the stored object on
    /// update, for transition rules). The errors, in the apiserver's order.
    pub(crate) fn admit(&self, obj: &mut Value, old: Option<&Value>) -> Vec<FieldError> {
        prune::drop_nulls(obj, &self.root);
        prune::default(obj, &self.root);
        prune::prune(obj, &self.root, true);
        let mut errs = Vec::new();
        validate::value(&mut errs, "", obj, &self.root, true);
        validate::lists(&mut errs, "", obj, &self.root);
        if !self.root.has_rules() {
            return errs;
        }
        if errs.iter().any(FieldError::blocks_rules) {
            errs.push(FieldError::invalid(
                "",
                Value::Null,
                "some validation rules were not checked because the object was invalid; \
                 correct the existing errors to complete validation",
            ));
            return errs;
        }
        rules::check(&mut errs, "", obj, old, &self.root, true);
        errs
    }
}

/// `a.b` from a parent path and a field name (no dot at the root).
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `a[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `a[key]`, the apimachinery path of a map value.
pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

#[cfg(test)]
mod tests;
