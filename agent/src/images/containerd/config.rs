//! Facts about the CRI plugin that containerd 2.x no longer reports through CRI `Status`
//! (registry `config_path`, snapshotter), read from containerd's own config file instead.
//! Both config schemas are understood: `version = 2` (containerd 1.x) and `version = 3` (2.x).

use std::path::PathBuf;

use super::CriConfig;

/// containerd 2.x's default registry hosts directory when `config_path` is unset.
const V3_DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// Reads what it can from a containerd config file's text; unknown shapes give empty facts.
pub(super) fn parse(text: &str) -> CriConfig {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return CriConfig::default();
    };
    let version = doc
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(1);
    let plugins = doc.get("plugins").and_then(toml::Value::as_table);
    let plugin = |name: &str| {
        plugins
            .and_then(|p| p.get(name))
            .and_then(toml::Value::as_table)
    };
    let text_at = |table: Option<&toml::Table>, path: &[&str]| -> Option<String> {
        let mut cur = table?;
        let (last, dirs) = path.split_last()?;
        for d in dirs {
            cur = cur.get(*d)?.as_table()?;
        }
        cur.get(*last)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let root = doc
        .get("root")
        .and_then(toml::Value::as_str)
        .map(PathBuf::from);
    if version >= 3 {
        let images = plugin("io.containerd.cri.v1.images");
        CriConfig {
            root,
            snapshotter: text_at(images, &["snapshotter"]),
            config_path: Some(PathBuf::from(
                text_at(images, &["registry", "config_path"])
                    .unwrap_or_else(|| V3_DEFAULT_HOSTS_DIR.to_string()),
            )),
        }
    } else {
        let cri = plugin("io.containerd.grpc.v1.cri");
        CriConfig {
            root,
            snapshotter: text_at(cri, &["containerd", "snapshotter"]),
            config_path: text_at(cri, &["registry", "config_path"]).map(PathBuf::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_schema() {
        let c = parse(
            r#"
version = 2
root = "/data/containerd"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"#,
        );
        assert_eq!(c.root, Some(PathBuf::from("/data/containerd")));
        assert_eq!(c.snapshotter.as_deref(), Some("overlayfs"));
        assert_eq!(
            c.config_path,
            Some(PathBuf::from("/etc/containerd/certs.d"))
        );
    }

    #[test]
    fn version_3_schema_and_its_default_hosts_dir() {
        let c = parse(
            r#"
version = 3
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/x/hosts"
"#,
        );
        assert_eq!(c.snapshotter.as_deref(), Some("native"));
        assert_eq!(c.config_path, Some(PathBuf::from("/x/hosts")));
        let d = parse("version = 3\n");
        assert_eq!(d.config_path, Some(PathBuf::from(V3_DEFAULT_HOSTS_DIR)));
    }

    #[test]
    fn garbage_gives_nothing() {
        let c = parse("not toml [");
        assert!(c.root.is_none() && c.config_path.is_none() && c.snapshotter.is_none());
    }
}
