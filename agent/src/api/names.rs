//! The naming rule for ColdModels and the node label derived from a name.

use sha2::{Digest, Sha256};

use super::MODEL_LABEL_PREFIX;
use crate::weights::RepoId;

/// Longest ColdModel name: `coldstart.dev/model.<name>` must stay within a label key's 63
/// characters for the name part.
const MAX_NAME: usize = 50;
/// Kept characters of a name that is too long, before `-` and the hash.
const CUT: usize = 43;

/// The ColdModel name for a Hub repository id: lowercase, `/` becomes `--`, every other
/// character not allowed in a DNS label becomes `-`. A result longer than 50 characters is cut
/// to 43 and gets `-` and the first 6 hex digits of sha256(repo id). A result that would end in
/// `-` (an id ending in `_`) takes the same hashed form, so every name is a valid DNS label.
pub fn model_name(repo: &RepoId) -> String {
    let id = repo.as_str();
    let mut name = String::with_capacity(id.len() + 1);
    for c in id.chars() {
        match c {
            '/' => name.push_str("--"),
            c if c.is_ascii_alphanumeric() => name.push(c.to_ascii_lowercase()),
            _ => name.push('-'),
        }
    }
    if name.len() > MAX_NAME || name.ends_with('-') {
        let digest = Sha256::digest(id.as_bytes());
        let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
        name.truncate(CUT.min(name.len()));
        name.push('-');
        name.push_str(&hash);
    }
    name
}

/// Longest ColdModel name the API accepts: the name part of a label key (after the `/` of
/// `coldstart.dev/model.<name>`) has at most 63 characters, 6 of them `model.`. The CRD
/// enforces it; [`model_name`] stays shorter.
pub const MAX_MODEL_NAME: usize = 57;

/// Why `name` cannot name a ColdModel (it would not make a valid node label key), if it
/// cannot: at most 57 characters, a DNS label (lowercase letters, digits, `-`, alphanumeric at
/// both ends). ColdModels created before the CRD said so may still carry such names.
pub fn model_name_problem(name: &str) -> Option<String> {
    let dns_label = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if name.len() > MAX_MODEL_NAME {
        Some(format!(
            "the name has {} characters; {MODEL_LABEL_PREFIX}<name> allows at most {MAX_MODEL_NAME}",
            name.len()
        ))
    } else if !dns_label {
        Some(
            "the name is not a DNS label (lowercase letters, digits and '-', alphanumeric at \
             both ends), so it cannot make the node label"
                .into(),
        )
    } else {
        None
    }
}

/// The node label key marking `name` warm on a node: `coldstart.dev/model.<name>`.
pub fn model_label_key(name: &str) -> String {
    format!("{MODEL_LABEL_PREFIX}{name}")
}
