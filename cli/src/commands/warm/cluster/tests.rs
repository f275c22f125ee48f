use coldstart_agent::api::SecretKeyRef;

use super::parse_secret_key;

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
