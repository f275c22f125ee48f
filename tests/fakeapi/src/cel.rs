//! The CEL evaluator for admission policies: `cel-interpreter` plus the Kubernetes CEL library
//! functions our policies use (`split`, `join`, `lowerAscii`, `upperAscii`, `trim`, `indexOf`,
//! `find`, `findAll`), over JSON values converted as the apiserver sees them.
//!
//! An unknown function, variable or a `.field` the object does not have is an error, never a
//! pass; so is a result of the wrong type, and any construct the interpreter cannot evaluate
//! (it panics on a few, which is caught here). One gap remains: `m['missing']` and `l[99]`
//! yield `null` rather than an error (the interpreter answers indexing that way).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use cel_interpreter::extractors::{Arguments, This};
use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, Program, Value as Cel};
use serde_json::Value;

/// Why an expression gave no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CelError {
    /// The expression does not parse.
    #[error("compilation failed: {0}")]
    Compile(String),
    /// Evaluation failed: unknown function or variable, missing field, wrong operand types.
    #[error("{0}")]
    Eval(String),
    /// The interpreter cannot evaluate a construct (it panicked; caught).
    #[error("the expression uses a construct this evaluator does not support")]
    Unsupported,
    /// The result has the wrong type.
    #[error("expected a {want} result, got {got}")]
    Type {
        /// What the caller needs.
        want: &'static str,
        /// What the expression gave.
        got: String,
    },
}

/// Variables for one evaluation (`object`, `oldObject`, `request`, `variables`).
pub(crate) struct Env {
    ctx: Context<'static>,
}

impl Env {
    /// An environment with the standard and Kubernetes functions and no variables.
    pub(crate) fn new() -> Env {
        let mut ctx = Context::default();
        ctx.add_function("split", split);
        ctx.add_function("join", join);
        ctx.add_function("lowerAscii", |This(s): This<Arc<String>>| {
            s.to_ascii_lowercase()
        });
        ctx.add_function("upperAscii", |This(s): This<Arc<String>>| {
            s.to_ascii_uppercase()
        });
        ctx.add_function("trim", |This(s): This<Arc<String>>| s.trim().to_string());
        ctx.add_function("indexOf", index_of);
        ctx.add_function("find", find);
        ctx.add_function("findAll", find_all);
        Env { ctx }
    }

    /// Binds `name` to a JSON value.
    pub(crate) fn bind(&mut self, name: &str, value: &Value) {
        self.ctx.add_variable_from_value(name, from_json(value));
    }

    /// Binds `name` to a map of already evaluated values (the policy's `variables`).
    pub(crate) fn bind_map(&mut self, name: &str, values: &[(String, Cel)]) {
        let map: HashMap<Key, Cel> = values
            .iter()
            .map(|(k, v)| (Key::from(k.clone()), v.clone()))
            .collect();
        self.ctx
            .add_variable_from_value(name, Cel::Map(Map { map: Arc::new(map) }));
    }

    /// Evaluates `expr` to any value.
    pub(crate) fn eval(&self, expr: &str) -> Result<Cel, CelError> {
        // The parser panics on some malformed input: caught like the interpreter's panics.
        let program = match std::panic::catch_unwind(|| Program::compile(expr)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(CelError::Compile(e.to_string())),
            Err(_) => return Err(CelError::Compile(format!("cannot parse {expr:?}"))),
        };
        let ctx = &self.ctx;
        match std::panic::catch_unwind(AssertUnwindSafe(|| program.execute(ctx))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CelError::Eval(e.to_string())),
            Err(_) => Err(CelError::Unsupported),
        }
    }

    /// Evaluates `expr`, which must give a bool.
    pub(crate) fn eval_bool(&self, expr: &str) -> Result<bool, CelError> {
        match self.eval(expr)? {
            Cel::Bool(b) => Ok(b),
            other => Err(CelError::Type {
                want: "bool",
                got: format!("{other:?}"),
            }),
        }
    }

    /// Evaluates `expr`, which must give a string.
    pub(crate) fn eval_string(&self, expr: &str) -> Result<String, CelError> {
        match self.eval(expr)? {
            Cel::String(s) => Ok(s.to_string()),
            other => Err(CelError::Type {
                want: "string",
                got: format!("{other:?}"),
            }),
        }
    }
}

/// Whether `expr` parses (a CRD's rules are checked when the CRD is written).
pub(crate) fn compile(expr: &str) -> Result<(), CelError> {
    match std::panic::catch_unwind(|| Program::compile(expr)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(CelError::Compile(e.to_string())),
        Err(_) => Err(CelError::Compile(format!("cannot parse {expr:?}"))),
    }
}

/// JSON to CEL: integers as `int` (as the apiserver types them), other numbers as `double`.
pub(crate) fn from_json(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(from_json).collect())),
        Value::Object(o) => {
            let map: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), from_json(v)))
                .collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

fn string_list(items: impl Iterator<Item = String>) -> Cel {
    Cel::List(Arc::new(items.map(|s| Cel::String(Arc::new(s))).collect()))
}

/// `'a,b'.split(',')`, `'a,b,c'.split(',', 2)` (Kubernetes strings library).
fn split(This(s): This<Arc<String>>, Arguments(args): Arguments) -> Result<Cel, ExecutionError> {
    let sep = match args.first() {
        Some(Cel::String(sep)) => sep.clone(),
        _ => return Err(ExecutionError::function_error("split", "wants a separator")),
    };
    match args.get(1) {
        None => Ok(string_list(s.split(sep.as_str()).map(str::to_string))),
        Some(Cel::Int(n)) if *n < 0 => Ok(string_list(s.split(sep.as_str()).map(str::to_string))),
        Some(Cel::Int(0)) => Ok(string_list(std::iter::empty())),
        Some(Cel::Int(n)) => {
            let n = usize::try_from(*n).unwrap_or(usize::MAX);
            Ok(string_list(s.splitn(n, sep.as_str()).map(str::to_string)))
        }
        Some(_) => Err(ExecutionError::function_error(
            "split",
            "wants an int limit",
        )),
    }
}

/// `['a', 'b'].join()`, `['a', 'b'].join(',')`.
fn join(
    This(list): This<Arc<Vec<Cel>>>,
    Arguments(args): Arguments,
) -> Result<Cel, ExecutionError> {
    let sep = match args.first() {
        None => String::new(),
        Some(Cel::String(s)) => s.to_string(),
        Some(_) => return Err(ExecutionError::function_error("join", "wants a string")),
    };
    let parts = list
        .iter()
        .map(|v| match v {
            Cel::String(s) => Ok(s.to_string()),
            _ => Err(ExecutionError::function_error(
                "join",
                "wants a list of strings",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Cel::String(Arc::new(parts.join(&sep))))
}

/// `'hello'.indexOf('l')`: the code-point index of the first match, or -1.
fn index_of(This(s): This<Arc<String>>, sub: Arc<String>) -> i64 {
    match s.find(sub.as_str()) {
        Some(b) => i64::try_from(s[..b].chars().count()).unwrap_or(-1),
        None => -1,
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, ExecutionError> {
    regex::Regex::new(pattern).map_err(|e| ExecutionError::function_error("find", e.to_string()))
}

/// `'abc 123'.find('[0-9]+')`: the first match, or `''` (Kubernetes regex library).
fn find(This(s): This<Arc<String>>, pattern: Arc<String>) -> Result<Cel, ExecutionError> {
    let re = regex(&pattern)?;
    let m = re
        .find(&s)
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    Ok(Cel::String(Arc::new(m)))
}

/// `'a1 b2'.findAll('[0-9]')`: every match.
fn find_all(This(s): This<Arc<String>>, pattern: Arc<String>) -> Result<Cel, ExecutionError> {
    let re = regex(&pattern)?;
    Ok(string_list(
        re.find_iter(&s).map(|m| m.as_str().to_string()),
    ))
}

#[cfg(test)]
mod tests;
