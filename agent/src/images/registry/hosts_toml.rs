//! Parsing of containerd's `hosts.toml` (the registry host configuration in CRI's
//! `config_path`), with host order taken from the file as containerd does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::host::{CAP_ALL, CAP_PULL, CAP_PUSH, CAP_RESOLVE, RegistryHost, clean_path};

/// Parse a `hosts.toml`: `[host."URL"]` entries in file order, then the top-level `server`
/// (whose address stays empty when absent, for the default to fill). `base` resolves relative
/// certificate paths.
pub(super) fn parse(text: &str, base: &Path) -> Result<Vec<RegistryHost>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let empty = toml::Table::new();
    let tables = match doc.get("host") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err("`host` must be a table".to_owned()),
    };
    let mut hosts = Vec::new();
    // toml::Table forgets the order; containerd takes it from the table headers, so do we.
    for key in ordered_host_keys(text) {
        let Some(value) = tables.get(&key) else {
            continue;
        };
        let table = value
            .as_table()
            .ok_or_else(|| format!("host {key:?} must be a table"))?;
        hosts.push(parse_host(Some(&key), table, base).map_err(|e| format!("host {key:?}: {e}"))?);
    }
    let server = match doc.get("server") {
        None => None,
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("`server` must be a string".to_owned()),
    };
    hosts.push(parse_host(server, &doc, base).map_err(|e| format!("server: {e}"))?);
    Ok(hosts)
}

/// One host's settings from its table (the top level for `server`).
fn parse_host(server: Option<&str>, t: &toml::Table, base: &Path) -> Result<RegistryHost, String> {
    let mut host = RegistryHost {
        skip_verify: match t.get("skip_verify") {
            None => None,
            Some(v) => Some(v.as_bool().ok_or("`skip_verify` must be a boolean")?),
        },
        ..RegistryHost::default()
    };
    let override_path = match t.get("override_path") {
        None => false,
        Some(v) => v.as_bool().ok_or("`override_path` must be a boolean")?,
    };
    if let Some(server) = server {
        set_address(&mut host, server, override_path)?;
    }
    host.capabilities = match t.get("capabilities") {
        None => CAP_ALL,
        Some(v) => {
            let names = strings(v).ok_or("`capabilities` must be a list of strings")?;
            let mut caps = 0;
            for name in &names {
                caps |= match name.to_ascii_lowercase().as_str() {
                    "pull" => CAP_PULL,
                    "resolve" => CAP_RESOLVE,
                    "push" => CAP_PUSH,
                    _ => return Err(format!("unknown capability {name:?}")),
                };
            }
            if names.is_empty() { CAP_ALL } else { caps }
        }
    };
    if let Some(v) = t.get("ca") {
        let files = one_or_many(v).ok_or("`ca` must be a string or a list of strings")?;
        host.ca = files.iter().map(|f| base.join(f)).collect();
    }
    if let Some(v) = t.get("client") {
        host.client = client_pairs(v, base).ok_or("`client` must be a path, paths or pairs")?;
    }
    if let Some(v) = t.get("header") {
        let table = v.as_table().ok_or("`header` must be a table")?;
        for (name, value) in table {
            let values = one_or_many(value)
                .ok_or_else(|| format!("header {name:?} must be a string or strings"))?;
            host.header
                .extend(values.into_iter().map(|v| (name.clone(), v)));
        }
    }
    if let Some(v) = t.get("dial_timeout") {
        let s = v.as_str().ok_or("`dial_timeout` must be a string")?;
        host.dial_timeout = Some(parse_go_duration(s).ok_or("invalid `dial_timeout`")?);
    }
    Ok(host)
}

/// Scheme, address and API root of a host URL (`https://` assumed without a scheme).
fn set_address(host: &mut RegistryHost, server: &str, override_path: bool) -> Result<(), String> {
    let server = if server.starts_with("http") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let url = reqwest::Url::parse(&server).map_err(|e| format!("invalid url {server:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported scheme in {server:?}"));
    }
    let after_scheme = server.split_once("://").map_or("", |(_, rest)| rest);
    let end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(end);
    let raw_path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let mut path = clean_path(raw_path);
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    host.scheme = url.scheme().to_owned();
    host.authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .to_owned();
    host.path = path;
    Ok(())
}

fn strings(v: &toml::Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn one_or_many(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        v => strings(v),
    }
}

fn client_pairs(v: &toml::Value, base: &Path) -> Option<Vec<(PathBuf, Option<PathBuf>)>> {
    if let Some(s) = v.as_str() {
        return Some(vec![(base.join(s), None)]);
    }
    let mut pairs = Vec::new();
    for item in v.as_array()? {
        match item {
            toml::Value::String(s) => pairs.push((base.join(s), None)),
            item => match strings(item)?.as_slice() {
                [cert, key] => pairs.push((base.join(cert), Some(base.join(key)))),
                _ => return None,
            },
        }
    }
    Some(pairs)
}

/// A Go `time.ParseDuration` string such as `30s`, `1m30s` or `500ms`.
pub(super) fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Keys of the `[host."..."]` table headers in file order, subtables (`[host."x".header]`)
/// counted at their host's first appearance. Lines that only look like headers (inside
/// multi-line strings) are dropped by the caller, which keeps keys the parser also saw.
pub(super) fn ordered_host_keys(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('[') || line.starts_with("[[") {
            continue;
        }
        let Some(parts) = parse_header_key(&line[1..]) else {
            continue;
        };
        if parts.len() >= 2 && parts[0] == "host" && !keys.contains(&parts[1]) {
            keys.push(parts[1].clone());
        }
    }
    keys
}

/// The dotted key of a table header, `s` starting right after `[`.
fn parse_header_key(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let part = match chars.peek()? {
            '"' => {
                chars.next();
                basic_string(&mut chars)?
            }
            '\'' => {
                chars.next();
                let mut part = String::new();
                loop {
                    match chars.next()? {
                        '\'' => break part,
                        c => part.push(c),
                    }
                }
            }
            _ => {
                let mut part = String::new();
                while let Some(c) =
                    chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                {
                    part.push(c);
                }
                if part.is_empty() {
                    return None;
                }
                part
            }
        };
        parts.push(part);
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.next()? {
            '.' => {}
            ']' => return Some(parts),
            _ => return None,
        }
    }
}

/// The rest of a TOML basic string, its opening quote consumed.
fn basic_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => {
                let c = match chars.next()? {
                    'b' => '\u{8}',
                    't' => '\t',
                    'n' => '\n',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    '"' => '"',
                    '\\' => '\\',
                    'u' => hex_char(chars, 4)?,
                    'U' => hex_char(chars, 8)?,
                    _ => return None,
                };
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

fn hex_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize) -> Option<char> {
    let hex: String = (0..n).map(|_| chars.next()).collect::<Option<String>>()?;
    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)
}
