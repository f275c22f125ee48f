//! Checks of a resolved [`Config`] that no single flag's parser can make.

use std::time::Duration;

use super::{Config, Error, MAX_SOCKET_PATH};

impl Config {
    pub(super) fn validate(&self) -> Result<(), Error> {
        let invalid = |setting, reason: &str| {
            Err(Error::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        match &self.node_name {
            None if !self.standalone => {
                return invalid("node-name", "required unless --standalone");
            }
            Some(name) if !is_dns_subdomain(name) => {
                return invalid(
                    "node-name",
                    &format!("{name:?} is not a Kubernetes node name (DNS subdomain)"),
                );
            }
            _ => {}
        }
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return invalid("namespace", &format!("{ns:?} is not a DNS label"));
        }
        for (setting, path) in [
            ("containerd-socket", &self.containerd_socket),
            ("containerd-root", &self.containerd_root),
            ("cache-root", &self.cache_root),
            ("models-file", &self.models_file),
            ("socket", &self.socket),
        ] {
            if !path.is_absolute() {
                return invalid(setting, &format!("{} is not absolute", path.display()));
            }
        }
        if self.tick_interval.is_zero() || self.tick_interval > Duration::from_secs(3600) {
            return invalid("tick-interval", "must be 1 to 3600 seconds");
        }
        if self.ready_timeout <= self.tick_interval {
            return invalid("ready-timeout", "must be longer than the tick interval");
        }
        if self.shutdown_timeout.is_zero() {
            return invalid("shutdown-timeout", "must be at least 1 second");
        }
        if !(1..=64).contains(&self.weight_syncs) {
            return invalid("weight-syncs", "must be 1 to 64");
        }
        // sun_path holds 108 bytes with the terminating NUL.
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return invalid(
                "socket",
                &format!("longer than {MAX_SOCKET_PATH} bytes (a unix socket path limit)"),
            );
        }
        let endpoint = &self.hub_endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return invalid(
                "hub-endpoint",
                &format!("{endpoint:?} is not an http(s) URL"),
            );
        }
        if self
            .nvml_library
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid("nvml-library", "must not be empty");
        }
        Ok(())
    }
}

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
