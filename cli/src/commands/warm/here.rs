//! `coldctl warm --here`: in this process, the image pre-pulled through the node's containerd
//! (see [`image`](super::image)) and the model's weights synced into the local Hub cache (see
//! [`model`](super::model)), both at once; every input is checked before either starts.

use indicatif::MultiProgress;
use serde_json::json;

use super::{Args, image, model};
use crate::Cli;
use crate::output;
use crate::report::{CliError, Output};

/// Runs `warm --here`.
pub async fn run(cli: &Cli, args: &Args) -> Result<Output, CliError> {
    if args.selector.is_some() || args.token_secret.is_some() || args.wait {
        return Err(CliError::usage(
            "--selector, --token-secret and --wait are for the cluster: drop --here",
        ));
    }
    if args.model.is_none() && args.image.is_none() {
        return Err(CliError::usage(
            "nothing to warm: give a MODEL, --image REF, or both",
        ));
    }
    // Validate everything before starting anything.
    let image = args
        .image
        .as_deref()
        .map(|i| image::prepare(args, i))
        .transpose()?;
    let model = args
        .model
        .as_deref()
        .map(|m| model::prepare(&args.hub, &args.sync, m))
        .transpose()?;
    let bars = output::stderr_is_terminal().then(MultiProgress::new);
    let image_job = async {
        match &image {
            Some((i, auth)) => {
                Some(image::warm(cli.output, bars.as_ref(), args, i, auth.as_ref()).await)
            }
            None => None,
        }
    };
    let model_job = async {
        match model {
            Some(p) => Some(model::warm(cli.output, bars.as_ref(), p).await),
            None => None,
        }
    };
    let (image_result, model_result) = tokio::join!(image_job, model_job);
    let mut errors = Vec::new();
    let image_report = image_result.transpose().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let model_report = model_result.transpose().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if !errors.is_empty() {
        return Err(CliError::Failed(errors));
    }
    if let Some(r) = &image_report {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    let mut text = String::new();
    if let Some(r) = &image_report {
        text.push_str(&format!(
            "{}: present, unpacked, pinned ({}, {} attempt(s), {:.1}s, containerd {})\n",
            r.image,
            output::bytes(r.state.size),
            r.attempts,
            r.seconds,
            r.runtime.version
        ));
    }
    if let Some(r) = &model_report {
        text.push_str(&format!(
            "{}@{}: {} files, {} verified in {} ({} downloaded, {:.1}s)\n",
            r.repo,
            &r.commit[..12.min(r.commit.len())],
            r.files,
            output::bytes(r.bytes),
            r.snapshot.display(),
            output::bytes(r.downloaded_bytes),
            r.seconds
        ));
    }
    let doc = output::camel_keys(json!({
        "ok": true,
        "image": image_report,
        "model": model_report,
    }));
    Ok(Output::text(doc, text))
}
