//! The image pull's parallel ranged fetch, as the daemon's flags (`--fetch-*`, env
//! `COLDSTART_FETCH_*`) and its file's `[fetch]` table set it.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::Error;
use crate::images::FetchOptions;

/// Flags of the ranged fetch (each unset one falls back to the file, then the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct FetchArgs {
    /// Leave every image byte to containerd's own pull (no parallel ranged fetch before it).
    #[arg(long, env = "COLDSTART_NO_RANGED_FETCH")]
    pub no_ranged_fetch: bool,
    /// Connections of the ranged fetch to a registry, shared across layers [default: 8].
    #[arg(long, env = "COLDSTART_FETCH_CONNECTIONS")]
    pub fetch_connections: Option<usize>,
    /// Range size (MiB); smaller blobs are fetched whole [default: 8].
    #[arg(long, env = "COLDSTART_FETCH_CHUNK_MIB")]
    pub fetch_chunk_mib: Option<u64>,
    /// Memory (MiB) the ranged fetch may hold: ranges in flight, and where ranges go through
    /// the Content API those waiting to be written in order [default: 128].
    #[arg(long, env = "COLDSTART_FETCH_BUFFER_MIB")]
    pub fetch_buffer_mib: Option<u64>,
    /// Fall back to containerd's own pull when one connection already moves this many MB/s
    /// (the registry does not cap connections; 0: never) [default: 200].
    #[arg(long, env = "COLDSTART_FETCH_FAST_MBPS")]
    pub fetch_fast_mbps: Option<u64>,
    /// Append ranges in order through the Content API even where containerd's content store
    /// is on this filesystem (by default they are written in place into a staging ingest).
    #[arg(long, env = "COLDSTART_FETCH_VIA_API")]
    pub fetch_via_api: bool,
    /// Seconds until containerd collects what an interrupted ranged fetch left [default:
    /// 21600].
    #[arg(long, env = "COLDSTART_FETCH_LEASE_TTL", value_name = "SECONDS")]
    pub fetch_lease_ttl: Option<u64>,
}

/// The file's `[fetch]` table: the flags' names without `fetch-`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FetchFile {
    /// false: see [`FetchArgs::no_ranged_fetch`].
    pub enabled: Option<bool>,
    /// See [`FetchArgs::fetch_connections`].
    pub connections: Option<usize>,
    /// See [`FetchArgs::fetch_chunk_mib`].
    pub chunk_mib: Option<u64>,
    /// See [`FetchArgs::fetch_buffer_mib`].
    pub buffer_mib: Option<u64>,
    /// See [`FetchArgs::fetch_fast_mbps`].
    pub fast_mbps: Option<u64>,
    /// See [`FetchArgs::fetch_via_api`].
    pub via_api: Option<bool>,
    /// See [`FetchArgs::fetch_lease_ttl`].
    pub lease_ttl: Option<u64>,
}

const MIB: u64 = 1 << 20;

impl FetchArgs {
    /// The flags over the file over the defaults, checked.
    pub fn merge(self, file: Option<FetchFile>) -> Result<FetchOptions, Error> {
        let file = file.unwrap_or_default();
        let d = FetchOptions::default();
        let mib = |v: Option<u64>, f: Option<u64>, default: u64| {
            v.or(f)
                .map_or(Some(default), |m| m.checked_mul(MIB))
                .ok_or_else(|| Error::Invalid {
                    setting: "fetch",
                    reason: "a size in MiB is too large".into(),
                })
        };
        let opts = FetchOptions {
            enabled: !self.no_ranged_fetch && file.enabled.unwrap_or(true),
            connections: self
                .fetch_connections
                .or(file.connections)
                .unwrap_or(d.connections),
            chunk_bytes: mib(self.fetch_chunk_mib, file.chunk_mib, d.chunk_bytes)?,
            buffer_bytes: mib(self.fetch_buffer_mib, file.buffer_mib, d.buffer_bytes)?,
            fast_bytes_per_sec: self
                .fetch_fast_mbps
                .or(file.fast_mbps)
                .map_or(d.fast_bytes_per_sec, |m| m.saturating_mul(1_000_000)),
            in_place: !self.fetch_via_api && !file.via_api.unwrap_or(false),
            lease_ttl: self
                .fetch_lease_ttl
                .or(file.lease_ttl)
                .map_or(d.lease_ttl, Duration::from_secs),
        };
        opts.validate().map_err(|reason| Error::Invalid {
            setting: "fetch",
            reason,
        })?;
        Ok(opts)
    }
}
