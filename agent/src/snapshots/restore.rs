//! Whether this node can restore a checkpoint through CRI `CreateContainer`, and why not.
//!
//! Facts (section B): containerd restores from a checkpoint image from 2.1.0; 2.2.7+ and 2.3.4+
//! need `enable_experimental_restore_via_create = true` (default false); 2.4 removes it. The
//! shim and runc find `criu` on containerd's PATH (CRIU >= 3.16).

use super::Error;
use crate::images::version_at_least;

/// What decides whether a node can restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSupport {
    /// containerd's version (`2.1.9`).
    pub containerd: String,
    /// `enable_experimental_restore_via_create`, when the config says (`None`: not set).
    pub restore_via_create: Option<bool>,
    /// CRIU's version where one was found, `None` when no `criu` was found.
    pub criu: Option<String>,
}

/// `Ok` when a node with `s` can restore through `CreateContainer`, else why not.
pub fn restore_support(s: &RestoreSupport) -> Result<(), Error> {
    let v = s.containerd.as_str();
    let no = |reason: String| Err(Error::CannotRestore { reason });
    if !version_at_least(v, (2, 1, 0)) {
        return no(format!(
            "containerd {v} cannot restore a checkpoint through CreateContainer (2.1 to 2.3 can)"
        ));
    }
    if version_at_least(v, (2, 4, 0)) {
        return no(format!(
            "containerd {v} removed restore through CreateContainer (KEP-5823 RestorePod replaces it)"
        ));
    }
    let switched = version_at_least(v, (2, 3, 4))
        || (version_at_least(v, (2, 2, 7)) && !version_at_least(v, (2, 3, 0)));
    if switched && s.restore_via_create != Some(true) {
        return no(format!(
            "containerd {v} restores only with enable_experimental_restore_via_create = true in \
             [plugins.\"io.containerd.cri.v1.runtime\"]"
        ));
    }
    match &s.criu {
        None => no("no criu found on containerd's PATH".to_string()),
        Some(c) if !version_at_least(c, (3, 16, 0)) => no(format!(
            "criu {c} is older than 3.16, which containerd needs"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str, switch: Option<bool>, criu: Option<&str>) -> RestoreSupport {
        RestoreSupport {
            containerd: v.to_string(),
            restore_via_create: switch,
            criu: criu.map(str::to_string),
        }
    }

    #[test]
    fn versions_switch_and_criu_decide() {
        let c = Some("4.2.1");
        restore_support(&s("2.1.9", None, c)).unwrap();
        restore_support(&s("2.2.6", None, c)).unwrap();
        restore_support(&s("2.3.3", None, c)).unwrap();
        restore_support(&s("2.2.7", Some(true), c)).unwrap();
        restore_support(&s("2.3.4", Some(true), c)).unwrap();
        let why = |x: RestoreSupport| restore_support(&x).unwrap_err().to_string();
        assert!(why(s("1.7.24", None, c)).contains("containerd 1.7.24 cannot restore"));
        assert!(why(s("2.0.5", None, c)).contains("2.1 to 2.3 can"));
        assert!(why(s("2.2.7", None, c)).contains("enable_experimental_restore_via_create"));
        assert!(why(s("2.3.4", Some(false), c)).contains("enable_experimental_restore_via_create"));
        assert!(why(s("2.4.0", Some(true), c)).contains("removed"));
        assert!(why(s("2.1.9", None, None)).contains("no criu"));
        assert!(why(s("2.1.9", None, Some("3.15"))).contains("older than 3.16"));
    }
}
