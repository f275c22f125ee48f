use super::*;

fn blob(n: u8, size: u64, media_type: &str) -> Blob {
    Blob {
        digest: format!("sha256:{:064x}", n),
        size,
        media_type: media_type.to_owned(),
    }
}

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn largest_blob_first_each_in_order_small_ones_whole() {
    let pending = vec![
        Pending {
            blob: blob(1, 10, LAYER),
            offset: 0,
        },
        Pending {
            blob: blob(2, 25, LAYER),
            offset: 0,
        },
    ];
    let ranges = plan(&pending, 10);
    let got: Vec<(usize, u64, u64)> = ranges.iter().map(|r| (r.index, r.start, r.end)).collect();
    assert_eq!(
        got,
        vec![(1, 0, 10), (1, 10, 20), (1, 20, 25), (0, 0, 10)],
        "the big blob's ranges first, in order; the small blob whole"
    );
}

#[test]
fn a_resumed_blob_starts_at_its_offset_and_a_complete_one_asks_nothing() {
    let pending = vec![
        Pending {
            blob: blob(1, 30, LAYER),
            offset: 15,
        },
        Pending {
            blob: blob(2, 5, LAYER),
            offset: 5,
        },
    ];
    let got: Vec<(u64, u64)> = plan(&pending, 10)
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(got, vec![(15, 25), (25, 30)]);
}

#[test]
fn ranges_cover_every_byte_once() {
    let pending: Vec<Pending> = (0..5u8)
        .map(|i| Pending {
            blob: blob(i, 1 + u64::from(i) * 37, LAYER),
            offset: u64::from(i) * 3,
        })
        .collect();
    let ranges = plan(&pending, 16);
    for (i, p) in pending.iter().enumerate() {
        let mut at = p.offset;
        for r in ranges.iter().filter(|r| r.index == i) {
            assert_eq!(r.start, at);
            assert!(r.end - r.start <= 16 && r.end > r.start);
            at = r.end;
        }
        assert_eq!(at, p.blob.size.max(p.offset));
    }
}

#[test]
fn ingest_refs_match_containerds_names() {
    assert_eq!(
        ingest_ref(&blob(1, 1, LAYER)),
        format!("layer-sha256:{:064x}", 1)
    );
    assert_eq!(
        ingest_ref(&blob(
            1,
            1,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        )),
        format!("layer-sha256:{:064x}", 1)
    );
    assert_eq!(
        ingest_ref(&blob(1, 1, "application/vnd.oci.image.config.v1+json")),
        format!("config-sha256:{:064x}", 1)
    );
    assert_eq!(
        ingest_ref(&blob(
            1,
            1,
            "application/vnd.docker.container.image.v1+json"
        )),
        format!("config-sha256:{:064x}", 1)
    );
}

#[test]
fn options_are_validated() {
    assert!(FetchOptions::default().validate().is_ok());
    let bad = [
        FetchOptions {
            connections: 0,
            ..Default::default()
        },
        FetchOptions {
            chunk_bytes: 1,
            ..Default::default()
        },
        FetchOptions {
            buffer_bytes: 1 << 20,
            chunk_bytes: 8 << 20,
            ..Default::default()
        },
    ];
    for o in bad {
        assert!(o.validate().is_err(), "{o:?}");
    }
}

#[test]
fn buffered_bytes_never_go_negative() {
    let p = FetchProgress::default();
    p.arrived(10);
    p.written(4);
    assert_eq!((p.buffered(), p.received()), (6, 10));
    p.written(100);
    assert_eq!(p.buffered(), 0);
}
