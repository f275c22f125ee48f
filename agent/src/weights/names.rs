//! Validation of what the Hub and the operator name: model ids, revisions and file paths.

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

/// Longest revision we accept (bytes); the Hub's branch names are far shorter.
const MAX_REVISION: usize = 255;

/// Whether `revision` is a full commit sha (40 hex digits, either case): a pinned commit, which
/// the resolved commit must equal.
pub fn is_commit_sha(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a revision given by the operator (a ColdModel, `--revision`) before any request: a
/// full commit sha, or a branch or tag name under git's ref-name rules (`git check-ref-format`):
/// `/`-separated components, none empty, none starting with `.` or ending in `.lock`; no `..`,
/// `@{`, control characters, space, `~ ^ : ? * [ \`; not `@`; no trailing `.` or `/`; at most
/// 255 bytes. `refs/pr/1` and `refs/convert/parquet` (names the Hub serves) pass; they are
/// URL-encoded in requests and stored as nested files under `refs/`, as `huggingface_hub` does.
pub fn validate_revision(revision: &str) -> Result<&str, Error> {
    let bad = |reason: &str| Error::InvalidRevision {
        revision: revision.chars().take(100).collect(),
        reason: reason.to_string(),
    };
    if revision.is_empty() {
        return Err(bad("empty"));
    }
    if is_commit_sha(revision) {
        return Ok(revision);
    }
    if revision.len() > MAX_REVISION {
        return Err(bad("longer than 255 bytes"));
    }
    if revision == "@" {
        return Err(bad("'@' alone is not a ref name"));
    }
    if let Some(c) = revision
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(bad(&format!(
            "character {c:?} is not allowed in a ref name"
        )));
    }
    if revision.contains("..") || revision.contains("@{") {
        return Err(bad("'..' and '@{' are not allowed"));
    }
    if revision.ends_with('.') || revision.ends_with('/') || revision.starts_with('/') {
        return Err(bad("may not start with '/' or end with '/' or '.'"));
    }
    for component in revision.split('/') {
        if component.is_empty() {
            return Err(bad("empty path component"));
        }
        if component.starts_with('.') || component.ends_with(".lock") {
            return Err(bad("a component may not start with '.' or end in '.lock'"));
        }
        if component.len() > MAX_COMPONENT {
            return Err(bad("path component too long"));
        }
    }
    if revision.starts_with('-') {
        return Err(bad("may not start with '-'"));
    }
    Ok(revision)
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
    fn revisions() {
        for ok in [
            "main",
            "v1.0",
            "refs/pr/1",
            "refs/convert/parquet",
            "feature/x-y_z",
            "0123456789abcdef0123456789abcdef01234567",
            "0123456789ABCDEF0123456789abcdef01234567",
        ] {
            assert_eq!(validate_revision(ok).unwrap(), ok);
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "../../x",
            "a/../b",
            "/main",
            "main/",
            "a//b",
            ".hidden",
            "x/.coldstart-write-1",
            "main.lock",
            "a.",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a\nb",
            "a@{1}",
            "@",
            "-rf",
            long.as_str(),
        ] {
            let e = validate_revision(bad).unwrap_err();
            assert_eq!(e.metric_label(), "invalid_revision", "{bad:?}");
            assert!(e.to_string().contains("revision"), "{e}");
        }
        assert!(is_commit_sha("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_sha("main"));
        assert!(!is_commit_sha("0123456789abcdef0123456789abcdef0123456"));
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
