//! The streaming page parser, chunk boundaries anywhere, and the caps against the fake Hub.

use coldstart_fakehub::{FakeHub, Options};

use super::*;
use crate::weights::hub::HubOptions;

const PAGE: &str = r#" [ {"type":"directory","oid":"d","size":0,"path":"sub"},
 {"type":"file","oid":"aa","size":3,"path":"sub/x.json"} ,
 {"type":"file","oid":"bb","size":9,"path":"w.safetensors","lfs":{"oid":"cc","size":9,"pointerSize":130},"extra":[1,{"a":"]"}]} ] "#;

fn parse_in_chunks(text: &str, chunk: usize, limits: ListingLimits) -> Result<Vec<String>, String> {
    let mut p = PageParser::new(limits);
    let mut paths = Vec::new();
    for piece in text.as_bytes().chunks(chunk) {
        p.feed(piece, |raw| {
            paths.push(format!("{}:{}", raw.kind, raw.path));
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))?;
        assert!(p.buf.len() <= limits.max_entry_bytes + chunk, "buffer grew");
    }
    p.finish().map_err(|e| format!("{e:?}"))?;
    Ok(paths)
}

#[test]
fn pages_parse_whatever_the_chunking() {
    let want = vec![
        "directory:sub".to_string(),
        "file:sub/x.json".to_string(),
        "file:w.safetensors".to_string(),
    ];
    for chunk in [1, 2, 3, 7, 64, PAGE.len()] {
        assert_eq!(
            parse_in_chunks(PAGE, chunk, ListingLimits::default()).unwrap(),
            want,
            "chunk {chunk}"
        );
    }
    assert_eq!(
        parse_in_chunks("[]", 1, ListingLimits::default()).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn bad_pages_fail() {
    for bad in [
        "{}",
        "[1]",
        r#"[{"type":"file","path":"a"} {"type":"file","path":"b"}]"#,
        r#"[{"type":"file","path":"a"},]"#,
        r#"[{"type":"file","path":"a"}] x"#,
        r#"[{"type":"file","path":"a"}"#,
        "",
    ] {
        let e = parse_in_chunks(bad, 3, ListingLimits::default()).unwrap_err();
        assert!(e.contains("Syntax"), "{bad:?}: {e}");
    }
    let small = ListingLimits {
        max_entry_bytes: 40,
        ..ListingLimits::default()
    };
    let long = format!(r#"[{{"type":"file","path":"{}"}}]"#, "a".repeat(100));
    let e = parse_in_chunks(&long, 8, small).unwrap_err();
    assert!(e.contains("EntryTooLarge"), "{e}");
}

async fn hub_with(files: usize) -> (FakeHub, String) {
    let hub = FakeHub::start(Options {
        tree_page_size: 7,
        ..Options::default()
    })
    .await
    .unwrap();
    let list = (0..files)
        .map(|i| (format!("d{}/f{i}.json", i % 3), b"{}".to_vec()))
        .collect();
    let commit = hub.add_repo_files("org/model", "main", list);
    (hub, commit.id)
}

#[tokio::test]
async fn listing_pages_and_caps() {
    let (hub, commit) = hub_with(50).await;
    let repo = RepoId::parse("org/model").unwrap();
    let client = HubClient::new(HubOptions::new(&hub.url())).unwrap();
    let tree = client.list_tree(&repo, &commit).await.unwrap();
    assert_eq!(tree.len(), 50);

    // 50 files and 3 directories: a cap of 52 entries is hit, clearly.
    let mut o = HubOptions::new(&hub.url());
    o.listing.max_entries = 52;
    let e = HubClient::new(o)
        .unwrap()
        .list_tree(&repo, &commit)
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "tree_too_large", "{e}");
    assert!(e.to_string().contains("52 entries"), "{e}");

    let mut o = HubOptions::new(&hub.url());
    o.listing.max_bytes = 1000;
    let e = HubClient::new(o)
        .unwrap()
        .list_tree(&repo, &commit)
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "tree_too_large", "{e}");
}
