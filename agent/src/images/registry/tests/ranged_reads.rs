//! Ranged blob reads: a redirect to blob storage keeps the range and drops the credentials;
//! a registry that ignores Range is told apart.

use super::*;
use crate::images::registry::ranged::RangeError;

/// 4 KiB of blob and its descriptor.
fn blob() -> (Vec<u8>, Blob) {
    let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let blob = Blob {
        digest: sha(&data),
        size: data.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
    };
    (data, blob)
}

/// `bytes=A-B` -> (A, B).
fn asked(req: &Seen) -> Option<(usize, usize)> {
    let (a, b) = req
        .header("range")?
        .strip_prefix("bytes=")?
        .split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[tokio::test]
async fn a_redirect_to_blob_storage_keeps_the_range_and_drops_the_credentials() {
    let (data, blob) = blob();
    let storage = {
        let data = data.clone();
        serve(move |req| match asked(req) {
            Some((a, b)) => Reply::status(206)
                .with("Content-Range", &format!("bytes {a}-{b}/{}", data.len()))
                .with_body(&data[a..=b]),
            None => Reply::status(400),
        })
        .await
    };
    let body = manifest_body(OCI_MANIFEST, &[4096]);
    let target = format!("{}/blobs/x?sig=1", storage.url());
    let registry = serve(move |req| {
        if req.path() == "/v2/team/app/manifests/1.0" {
            Reply::body(200, OCI_MANIFEST, &body)
        } else if req.path().starts_with("/v2/team/app/blobs/") {
            Reply::status(307).with("Location", &target)
        } else {
            Reply::status(404)
        }
    })
    .await;
    let img = image(&format!("{}/team/app:1.0", registry.addr));
    let creds = RegistryAuth {
        registry_token: "tok".into(),
        ..RegistryAuth::default()
    };
    let mut repo = client(None)
        .repository(&img, Some(&creds), Access::Pull)
        .unwrap();
    assert!(repo.manifest("1.0").await.unwrap().is_some());
    let reader = repo.blob_reader(Duration::from_secs(5)).unwrap();
    let got = reader.read(&blob, 100, 200, &|_| {}).await.unwrap();
    assert_eq!(got, data[100..200]);
    let at_registry = registry.seen();
    let blob_req = at_registry.last().unwrap();
    assert_eq!(blob_req.header("authorization"), Some("Bearer tok"));
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].header("range"), Some("bytes=100-199"));
    assert!(
        at_storage[0].header("authorization").is_none(),
        "credentials stay with the registry's host"
    );
}

#[tokio::test]
async fn a_whole_blob_answered_to_a_ranged_request_means_range_is_ignored() {
    let (data, blob) = blob();
    let body = manifest_body(OCI_MANIFEST, &[4096]);
    let registry = serve(move |req| {
        if req.path() == "/v2/team/app/manifests/1.0" {
            Reply::body(200, OCI_MANIFEST, &body)
        } else {
            Reply::status(200).with_body(&data)
        }
    })
    .await;
    let img = image(&format!("{}/team/app:1.0", registry.addr));
    let mut repo = client(None).repository(&img, None, Access::Pull).unwrap();
    assert!(repo.manifest("1.0").await.unwrap().is_some());
    let reader = repo.blob_reader(Duration::from_secs(5)).unwrap();
    let err = reader.read(&blob, 0, 1024, &|_| {}).await.unwrap_err();
    assert!(matches!(err, RangeError::Ignored { .. }), "{err:?}");
    // The whole blob, asked whole, is fine.
    let whole = reader.read(&blob, 0, 4096, &|_| {}).await.unwrap();
    assert_eq!(whole.len(), 4096);
}
