//! What the node holds, as the planner reads it: images through the images port, snapshots
//! through the weights port's inventory, and the warmer's own records of running and finished
//! work.

use std::collections::BTreeSet;

use tracing::warn;

use super::{Warmer, records, weights_key};
use crate::api::{ColdModel, model_name, name_of};
use crate::images::{ImageRef, Images};
use crate::plan::{self, Local, LocalImage, LocalWeights, Mono};
use crate::weights::Weights;

impl<I: Images + Send + Sync + 'static, W: Weights> Warmer<I, W> {
    /// Reaps finished tasks, aborts those no selected model wants as they are, and reports
    /// what the node holds for the planner.
    pub(super) async fn observe(&mut self, selected: &[&ColdModel]) -> Local {
        self.reap().await;
        self.abort_unwanted(selected).await;
        self.refresh_held().await;
        let mut local = Local {
            unselected_since: self.unselected_since.clone(),
            ..Local::default()
        };
        let selected_images: BTreeSet<&str> = selected
            .iter()
            .filter_map(|m| m.spec.image.as_deref())
            .collect();
        let wanted: BTreeSet<String> = selected_images
            .iter()
            .map(|i| i.to_string())
            .chain(self.managed.refs().iter().cloned())
            .collect();
        for image in wanted {
            let state = self.image_state(&image).await;
            // An unwanted image that is gone or no longer pinned needs nothing more from us.
            let done = matches!(
                state,
                LocalImage::Absent | LocalImage::Present { pinned: false }
            );
            if done && !selected_images.contains(image.as_str()) {
                self.managed.remove(&image);
                continue;
            }
            local.images.insert(image, state);
        }
        self.save_managed().await;
        for m in selected {
            let name = name_of(m);
            let state = records::weights(
                self.weight_records.get(name),
                &weights_key(m),
                self.held.contains_key(name),
                self.syncs.contains_key(name),
            );
            local.weights.insert(name.to_string(), state);
        }
        for name in self.held.keys() {
            local
                .weights
                .entry(name.clone())
                .or_insert(LocalWeights::Present);
        }
        for name in self.syncs.keys() {
            local
                .weights
                .entry(name.clone())
                .or_insert(LocalWeights::Syncing);
        }
        local
    }

    async fn image_state(&mut self, image: &str) -> LocalImage {
        if self.pulls.contains_key(image) {
            return LocalImage::Pulling;
        }
        let seen_failing = |reason: &str, at: Mono| {
            LocalImage::Failed(plan::Failed {
                reason: reason.to_string(),
                failures: 0,
                at,
            })
        };
        let Ok(reference) = ImageRef::parse(image) else {
            return seen_failing("invalid_reference", self.clock());
        };
        match self.images.status(&reference).await {
            Ok(Some(s)) if s.unpacked => {
                // The manifest digest CRI recorded for this name: what a pull would have
                // resolved to (an image present before this agent started has no record).
                let prefix = format!("{}@", reference.name());
                match s.repo_digests.iter().find_map(|d| d.strip_prefix(&prefix)) {
                    Some(d) => self
                        .present_digests
                        .insert(image.to_string(), d.to_string()),
                    None => self.present_digests.remove(image),
                };
                LocalImage::Present {
                    pinned: s.pin_label,
                }
            }
            Ok(_) => records::missing_image(self.image_records.get(image)),
            Err(e) => {
                self.metrics.image_error(&e);
                seen_failing(e.metric_label(), self.clock())
            }
        }
    }

    /// Models the cache holds, by ColdModel name (re-read every pass: cheap, a directory walk).
    async fn refresh_held(&mut self) {
        match self.weights.inventory().await {
            Ok(inv) => {
                self.held = inv
                    .into_iter()
                    .map(|u| (model_name(&u.repo), u.repo))
                    .collect();
            }
            Err(e) => {
                self.metrics.weights_error(&e);
                warn!(error = %crate::errors::chain(&e), "cannot read the cache inventory");
            }
        }
    }
}
