#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use coldstart_agent::standalone::{ModelEntry, NamedModel};

use super::{Changes, desired, entry};

fn file() -> Vec<NamedModel> {
    let mut e = ModelEntry::new("Org/Alpha");
    e.include = vec!["*.json".into()];
    e.image = Some("vllm/vllm-openai:v0.11.0".into());
    vec![NamedModel {
        name: "org--alpha".into(),
        model: e,
    }]
}

#[test]
fn a_new_repo_gets_a_new_entry_with_the_flags() {
    let c = Changes {
        revision: Some("v1".into()),
        exclude: vec!["*.bin".into()],
        ..Changes::default()
    };
    let e = entry(&file(), "org/beta", &c).unwrap();
    assert_eq!(e.repo, "org/beta");
    assert_eq!(e.revision.as_deref(), Some("v1"));
    assert_eq!(e.exclude, ["*.bin"]);
    assert!(e.include.is_empty() && e.image.is_none());
}

#[test]
fn flags_not_given_keep_the_current_entry() {
    for key in ["org--alpha", "org/alpha", "Org/Alpha"] {
        let e = entry(&file(), key, &Changes::default()).unwrap();
        assert_eq!(e, file()[0].model, "{key}");
    }
    let c = Changes {
        include: vec!["*.safetensors".into()],
        ..Changes::default()
    };
    let e = entry(&file(), "org--alpha", &c).unwrap();
    assert_eq!(e.repo, "Org/Alpha");
    assert_eq!(e.include, ["*.safetensors"]);
    assert_eq!(e.image.as_deref(), Some("vllm/vllm-openai:v0.11.0"));
}

#[test]
fn an_unknown_name_is_an_error() {
    let err = entry(&file(), "org--gamma", &Changes::default()).unwrap_err();
    assert!(
        err.to_string().contains("no model named org--gamma"),
        "{err}"
    );
}

#[test]
fn credential_paths_are_kept() {
    let c = Changes {
        token_file: Some(Path::new("/srv").join("hf-token")),
        pull_secret: Some(PathBuf::from("/etc/coldstart/pull.json")),
        ..Changes::default()
    };
    let e = desired(None, "org/x", &c);
    assert_eq!(e.token_file.as_deref(), Some(Path::new("/srv/hf-token")));
    assert_eq!(
        e.pull_secret.as_deref(),
        Some(Path::new("/etc/coldstart/pull.json"))
    );
    e.validate().unwrap();
}
