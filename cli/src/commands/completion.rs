//! `coldctl completion SHELL`: the completion script for a shell, on stdout.
//!
//! bash: `coldctl completion bash > /etc/bash_completion.d/coldctl`; zsh: into a directory on
//! `$fpath` as `_coldctl`; fish: `~/.config/fish/completions/coldctl.fish`.

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::Cli;
use crate::report::{CliError, Output};

/// Arguments of `coldctl completion`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the script for `args.shell` on stdout.
pub fn run(args: &Args) -> Result<Output, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "coldctl", &mut script);
    let text = String::from_utf8_lossy(&script).into_owned();
    crate::out!("{text}");
    Ok(Output::Streamed)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_shell_gets_a_script_naming_the_verbs() {
        for shell in ["bash", "zsh", "fish"] {
            let shell: clap_complete::Shell = shell.parse().expect("shell");
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut crate::Cli::command(), "coldctl", &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            for verb in [
                "warm",
                "status",
                "unwarm",
                "verify",
                "completion",
                "version",
            ] {
                assert!(text.contains(verb), "{shell}: no {verb}");
            }
        }
    }
}
