//! Validation of what the Hub and the operator name: model ids and file paths.

use std::fmt;

use super::Error;

/// Longest path we accept for a file in a repository (bytes), and for one component.
const MAX_PATH: usize = 1024;
const MAX_COMPONENT: usize = 255;

/// A Hub model repository id: `org/name` or `name`, each part `[A-Za-z0-9][A-Za-z0-9._-]*`
/// (no `--` or `..`, not ending in `.git`), at most 96 characters each, as the Hub allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    id: String,
}

impl RepoId {
    /// Parses and validates a model id.
    pub fn parse(id: &str) -> Result<RepoId, Error> {
        let bad = |reason: &str| Error::InvalidRepoId {
            id: id.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        if id.is_empty() {
            return Err(bad("empty"));
        }
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("expected org/name"));
        }
        for part in &parts {
            if part.is_empty() || part.len() > 96 {
                return Err(bad("each part must have 1 to 96 characters"));
            }
            if !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
            }
            if !part.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                return Err(bad("each part must start with a letter or digit"));
            }
            if part.contains("--") || part.contains("..") {
                return Err(bad("'--' and '..' are not allowed"));
            }
            if part.ends_with(".git") || part.ends_with('.') || part.ends_with('-') {
                return Err(bad("a part may not end in '.git', '.' or '-'"));
            }
        }
        Ok(RepoId { id: id.to_string() })
    }

    /// The id as given (`org/name`).
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The cache folder name: `models--org--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.id.replace('/', "--"))
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl serde::Serialize for RepoId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

/// Checks that a file path from the Hub stays inside the snapshot: relative, `/`-separated, no
/// `.`/`..`/empty components, no backslash, NUL or control characters, bounded length.
pub fn safe_relative_path(path: &str) -> Result<&str, Error> {
    let bad = |reason: &str| Error::HostileName {
        path: path.chars().take(300).collect(),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("empty name"));
    }
    if path.len() > MAX_PATH {
        return Err(bad("name too long"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\\') {
        return Err(bad("backslash in name"));
    }
    if path.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(bad("NUL or control character in name"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' or '..' component")),
            c if c.len() > MAX_COMPONENT => return Err(bad("path component too long")),
            _ => {}
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in [
            "meta-llama/Llama-3.1-8B-Instruct",
            "gpt2",
            "Qwen/Qwen2.5-0.5B",
            "a/b_c.d",
        ] {
            assert_eq!(RepoId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "/x",
            "x/",
            "a/b/c",
            "a b/c",
            "../x",
            "a/..",
            "org/na--me",
            "org/x.git",
            "-org/x",
            "org/x-",
            "org/😀",
            &"a".repeat(97),
        ] {
            let e = RepoId::parse(bad).unwrap_err();
            assert_eq!(e.metric_label(), "invalid_model_id", "{bad}");
        }
        let id = RepoId::parse("org/name").unwrap();
        assert_eq!(id.cache_folder(), "models--org--name");
    }

    #[test]
    fn hostile_names_are_refused() {
        for ok in [
            "config.json",
            "sub/dir/x.json",
            "a..b",
            ".gitattributes",
            "x/.hidden",
        ] {
            assert!(safe_relative_path(ok).is_ok(), "{ok}");
        }
        let long_component = "a".repeat(256);
        let long_path = format!("{}/x", "ab/".repeat(400));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a\nb",
            "..",
            long_component.as_str(),
            long_path.as_str(),
        ] {
            let e = safe_relative_path(bad).unwrap_err();
            assert_eq!(e.metric_label(), "hostile_name", "{bad:?}");
        }
    }
}
