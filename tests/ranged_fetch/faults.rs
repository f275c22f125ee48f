//! Faults of the ranged fetch: containerd or the agent killed mid-fetch (what is resumed, what
//! is fetched twice), a registry fast enough that containerd's own pull is as good, and a fetch
//! that outlives its lease.

use std::time::Duration;

use super::common::{self, warm};
use super::support::{self, TestEnv};
use super::{HOST, LONG, MIB, RANGED, all_versions, assert_complete, leases, setup, start};

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn containerd_killed_mid_fetch_resumes_from_what_it_committed() {
    let env = TestEnv::load();
    let s = setup(&[48 * MIB, 16 * MIB, MIB], 53, "test/resume:v1");
    let image = format!("{HOST}/test/resume:v1");
    let size = s.layout.layers_size() + s.layout.config_size;
    for bin in all_versions(&env) {
        // Through the Content API the fetch fails with containerd and resumes from the
        // ingests' offsets; in place it goes on writing and needs containerd only to commit.
        for via_api in [true, false] {
            let mut ctd = start(bin, s.hosts.path());
            s.proxy.reset();
            s.proxy.set_rate_limit(Some(16 * MIB as u64));
            let mut args = RANGED.to_vec();
            args.extend(["--stall-timeout", "30", "--attempts", "10"]);
            if via_api {
                args.push("--fetch-via-api");
            }
            let child = common::spawn_warm(&ctd, &image, &args);
            support::wait_for("half the image through the registry", LONG, || {
                (s.proxy.bytes_down() > size / 2).then_some(())
            })
            .expect("fetch progresses");
            ctd.kill9();
            let before = s.proxy.bytes_down();
            std::thread::sleep(Duration::from_millis(500));
            ctd.restart().expect("containerd restarts");
            s.proxy.set_rate_limit(None);
            let run = common::finish(child, LONG);
            assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
            let doc = run.json();
            let fetch = &doc["image"]["fetch"];
            assert!(fetch["fallback"].is_null(), "{doc}");
            let resumed = fetch["resumed"].as_u64().unwrap_or(0);
            let served = s.proxy.bytes_down();
            let refetched = served.saturating_sub(size);
            eprintln!(
                "containerd {} ({}): blobs {size} B, served {served} B, {before} B before the \
                 kill, {resumed} B resumed from ingests, {refetched} B fetched twice, {} attempts",
                bin.version,
                if via_api { "content api" } else { "in place" },
                doc["image"]["attempts"]
            );
            if via_api {
                assert_eq!(fetch["inPlace"], 0, "{doc}");
                assert!(doc["image"]["attempts"].as_u64().unwrap_or(0) >= 2, "{doc}");
                assert!(resumed > 0, "the retry resumed ingests: {doc}");
                // Refetched: what was received but not yet in containerd when it died, at
                // most the 8 MiB buffer, plus what the sockets held and the manifest.
                assert!(
                    refetched < 16 * MIB as u64,
                    "{}: fetched twice {refetched} B (buffer 8 MiB)",
                    bin.version
                );
            } else {
                assert_eq!(fetch["inPlace"], 4, "{doc}");
                // Nothing is fetched twice: only the manifest's bytes come on top.
                assert!(
                    refetched < MIB as u64,
                    "{}: fetched twice {refetched} B",
                    bin.version
                );
            }
            assert_complete(&ctd);
        }
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn an_agent_killed_mid_fetch_resumes_from_the_prefix_it_recorded() {
    let env = TestEnv::load();
    let s = setup(&[64 * MIB, MIB], 61, "test/agent-kill:v1");
    let image = format!("{HOST}/test/agent-kill:v1");
    let size = s.layout.layers_size() + s.layout.config_size;
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        s.proxy.reset();
        s.proxy.set_rate_limit(Some(16 * MIB as u64));
        let mut child = common::spawn_warm(&ctd, &image, RANGED);
        support::wait_for("most of the image through the registry", LONG, || {
            (s.proxy.bytes_down() > size * 3 / 4).then_some(())
        })
        .expect("fetch progresses");
        // The agent dies without a word; its staging ingests stay under its lease.
        child.kill().unwrap();
        let _ = child.wait();
        let before = s.proxy.bytes_down();
        s.proxy.set_rate_limit(None);
        let run = warm(&ctd, &image, RANGED, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let fetch = &doc["image"]["fetch"];
        let resumed = fetch["resumed"].as_u64().unwrap_or(0);
        let served = s.proxy.bytes_down();
        let refetched = served.saturating_sub(size);
        eprintln!(
            "containerd {}: blobs {size} B, {before} B served before the kill, {served} B in \
             all, {resumed} B resumed from the recorded prefix, {refetched} B fetched twice",
            bin.version
        );
        assert!(fetch["fallback"].is_null(), "{doc}");
        assert!(resumed >= 16 * MIB as u64, "resumed from the prefix: {doc}");
        // Fetched twice: what was written past the last recorded prefix (under 16 MiB) and
        // the ranges in flight (4 connections of 2 MiB), plus manifests.
        assert!(
            refetched < 26 * MIB as u64,
            "{}: fetched twice {refetched} B",
            bin.version
        );
        assert_complete(&ctd);
        let active = ctd.ctr(&["content", "active"]).unwrap();
        assert_eq!(active.lines().skip(1).count(), 0, "ingests left: {active}");
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_registry_as_fast_as_containerd_falls_back_after_one_range_and_leaves_nothing() {
    let env = TestEnv::load();
    let s = setup(&[24 * MIB, MIB], 67, "test/fast:v1");
    let image = format!("{HOST}/test/fast:v1");
    let size = s.layout.layers_size() + s.layout.config_size;
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        s.proxy.reset();
        // Loopback moves far more than 1 MB/s over one connection: the registry does not cap
        // connections, so containerd's own pull takes over after the first range.
        let mut args: Vec<&str> = RANGED
            .iter()
            .copied()
            .filter(|a| *a != "--fetch-fast-mbps" && *a != "0")
            .collect();
        args.extend(["--fetch-fast-mbps", "1"]);
        let run = warm(&ctd, &image, &args, LONG);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let why = doc["image"]["fetch"]["fallback"]
            .as_str()
            .unwrap_or_default();
        assert!(
            why.contains("does not cap connections"),
            "{}: {doc}",
            bin.version
        );
        assert!(
            run.stderr.contains("ranged fetch off"),
            "the progress output says so: {}",
            run.stderr
        );
        // The probe's range (2 MiB) is the only byte fetched twice.
        let served = s.proxy.bytes_down();
        eprintln!(
            "containerd {}: blobs {size} B, served {served} B ({} B on top)",
            bin.version,
            served.saturating_sub(size)
        );
        assert!(
            served < size + 3 * MIB as u64,
            "{}: served {served} B",
            bin.version
        );
        assert_complete(&ctd);
        let active = ctd.ctr(&["content", "active"]).unwrap();
        assert_eq!(
            active.lines().skip(1).count(),
            0,
            "the probe's staging ingest is gone: {active}"
        );
        // Nor is anything left on disk (an abort racing the writer's close would leave its
        // directory behind, unknown to containerd's metadata and never collected).
        let dirs: Vec<_> =
            std::fs::read_dir(ctd.root().join("io.containerd.content.v1.content/ingest"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
        assert!(
            dirs.is_empty(),
            "{}: ingest directories left: {dirs:?}",
            bin.version
        );
        assert!(leases(&ctd).is_empty(), "{:?}", leases(&ctd));
    }
}

#[test]
#[ignore = "needs root and scripts/test-env.sh (real containerd and registries)"]
fn a_fetch_that_outlives_its_lease_moves_to_a_new_one_and_completes() {
    let env = TestEnv::load();
    let s = setup(&[48 * MIB, MIB], 71, "test/renew:v1");
    let image = format!("{HOST}/test/renew:v1");
    for bin in all_versions(&env) {
        let ctd = start(bin, s.hosts.path());
        s.proxy.reset();
        // 49 MiB at 8 MiB/s: about 6 s, past 90 % of a 4 s lease at least once, with more
        // than the 16 MiB that a staging ingest records at a time already in.
        s.proxy.set_rate_limit(Some(8 * MIB as u64));
        let mut args = RANGED.to_vec();
        args.extend(["--fetch-lease-ttl", "4", "--stall-timeout", "30"]);
        let run = warm(&ctd, &image, &args, LONG);
        s.proxy.set_rate_limit(None);
        assert_eq!(run.code, 0, "containerd {}: {run:?}", bin.version);
        let doc = run.json();
        let fetch = &doc["image"]["fetch"];
        assert!(fetch["fallback"].is_null(), "{doc}");
        assert!(
            fetch["seconds"].as_f64().unwrap_or(0.0) > 3.6,
            "the fetch outlived 90 % of its lease: {doc}"
        );
        // The renewed fetch resumed what the first lease's attempt wrote.
        assert!(fetch["resumed"].as_u64().unwrap_or(0) > 0, "{doc}");
        assert_complete(&ctd);
        assert!(
            leases(&ctd).is_empty(),
            "every lease deleted: {:?}",
            leases(&ctd)
        );
    }
}
