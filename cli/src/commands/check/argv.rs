//! What a vLLM container's command line says: the model, `--revision`, `--shutdown-timeout`.
//!
//! The words are the container's `command` then `args`, each split on whitespace so that a
//! `sh -c "vllm serve ..."` line reads the same. vLLM's parser takes `--flag value` and
//! `--flag=value`, and `_` for `-` in flag names; so do we.

/// The container's words, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Argv(Vec<String>);

impl Argv {
    /// The words of `command` followed by `args`.
    pub fn new(command: &[String], args: &[String]) -> Argv {
        Argv(
            command
                .iter()
                .chain(args)
                .flat_map(|w| w.split_whitespace())
                .map(str::to_string)
                .collect(),
        )
    }

    /// The value of `--NAME` (`--NAME V` or `--NAME=V`; `_` and `-` alike); the last one wins,
    /// as with argparse.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let want = name.replace('_', "-");
        let mut found = None;
        let mut words = self.0.iter().peekable();
        while let Some(word) = words.next() {
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (flag, None),
            };
            if key.replace('_', "-") != want {
                continue;
            }
            found = match inline {
                Some(v) => Some(v),
                None => words.next_if(|w| !w.starts_with("--")).map(String::as_str),
            };
        }
        found
    }

    /// The model vLLM serves: `--model`, else the first word after `serve` that is no flag.
    pub fn model(&self) -> Option<&str> {
        if let Some(m) = self.flag("model") {
            return Some(m);
        }
        let serve = self.0.iter().position(|w| w == "serve")?;
        self.0
            .get(serve + 1)
            .filter(|w| !w.starts_with('-'))
            .map(String::as_str)
    }
}

/// Seconds a `preStop` exec command sleeps: the number after a `sleep` word (`sleep 15`,
/// `sh -c "sleep 15 && ..."`), 0 when there is none.
pub fn sleep_seconds(command: &[String]) -> i64 {
    let words: Vec<&str> = command.iter().flat_map(|w| w.split_whitespace()).collect();
    words
        .windows(2)
        .filter(|w| w[0] == "sleep" || w[0].ends_with("/sleep"))
        .filter_map(|w| w[1].trim_end_matches(['s', ';']).parse::<i64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{Argv, sleep_seconds};

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn flags_read_as_vllm_reads_them() {
        let a = Argv::new(
            &words("vllm serve"),
            &words("Org/M --revision=abc --shutdown_timeout 45 --port 8000"),
        );
        assert_eq!(a.model(), Some("Org/M"));
        assert_eq!(a.flag("revision"), Some("abc"));
        assert_eq!(a.flag("shutdown-timeout"), Some("45"));
        assert_eq!(a.flag("max-model-len"), None);
        let b = Argv::new(
            &["sh".into(), "-c".into()],
            &["vllm serve --model Org/N --revision r1 --revision r2".into()],
        );
        assert_eq!(b.model(), Some("Org/N"));
        assert_eq!(b.flag("revision"), Some("r2"));
        let c = Argv::new(&[], &words("serve --port 8000"));
        assert_eq!(c.model(), None);
        assert_eq!(c.flag("enforce-eager"), None);
    }

    #[test]
    fn pre_stop_sleeps_are_counted() {
        assert_eq!(sleep_seconds(&words("sleep 15")), 15);
        assert_eq!(
            sleep_seconds(&["/bin/sh".into(), "-c".into(), "sleep 10; kill 1".into()]),
            10
        );
        assert_eq!(sleep_seconds(&words("/bin/true")), 0);
    }
}
