use coldstart_agent::api::{ColdModelSpec, SecretKeyRef, SecretRef, parse_selector};

use super::{Changes, desired, parse_secret_key};

#[test]
fn token_secrets_take_an_optional_key() {
    assert_eq!(
        parse_secret_key("hf"),
        Ok(SecretKeyRef {
            name: "hf".into(),
            key: None
        })
    );
    assert_eq!(
        parse_secret_key("hf-token:HF_TOKEN"),
        Ok(SecretKeyRef {
            name: "hf-token".into(),
            key: Some("HF_TOKEN".into())
        })
    );
    for bad in ["", ":k", "hf:", "Hf", "hf_x", "-hf"] {
        assert!(parse_secret_key(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_new_model_gets_only_what_the_command_line_says() {
    let spec = desired(None, "org/m", &Changes::default());
    assert_eq!(spec.repo, "org/m");
    assert_eq!(spec.revision, None);
    assert_eq!(spec.image, None);
    assert_eq!(spec.node_selector, None);
}

#[test]
fn flags_not_given_keep_the_current_values() {
    let current = ColdModelSpec {
        repo: "org/m".into(),
        revision: Some("v1".into()),
        include: vec!["*.json".into()],
        exclude: Vec::new(),
        token_secret_ref: Some(SecretKeyRef {
            name: "hf".into(),
            key: None,
        }),
        image: Some("vllm/vllm-openai:v0.11.0".into()),
        image_pull_secret_ref: Some(SecretRef {
            name: "regcred".into(),
        }),
        node_selector: Some(parse_selector("pool=a").unwrap()),
        compile_cache: None,
        snapshot: None,
    };
    assert_eq!(
        desired(Some(&current), "org/m", &Changes::default()),
        current
    );
    let changes = Changes {
        revision: Some("v2".into()),
        exclude: vec!["*.bin".into()],
        selector: Some(parse_selector("pool=b").unwrap()),
        ..Changes::default()
    };
    let spec = desired(Some(&current), "org/m", &changes);
    assert_eq!(spec.revision.as_deref(), Some("v2"));
    assert_eq!(spec.exclude, vec!["*.bin".to_string()]);
    assert_eq!(spec.node_selector, Some(parse_selector("pool=b").unwrap()));
    assert_eq!(spec.include, current.include);
    assert_eq!(spec.image, current.image);
    assert_eq!(spec.token_secret_ref, current.token_secret_ref);
}
