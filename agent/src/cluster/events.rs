//! Events about this node (`events.k8s.io/v1` through kube's recorder, regarding the Node,
//! reporter [`super::REPORTER`] with the node as instance). Notes are cut to what the API
//! server stores: it refuses an Event whose note is longer than [`EVENT_NOTE_LIMIT`] bytes,
//! and an error chain quoted in a note (a long URL, a registry's answer) can be.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::debug;

/// Longest Event note the API server stores (`events.k8s.io/v1` refuses longer ones).
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// `note` cut to [`EVENT_NOTE_LIMIT`] bytes at a character boundary, ending in `...` when cut.
pub fn event_note(note: String) -> String {
    if note.len() <= EVENT_NOTE_LIMIT {
        return note;
    }
    let mut end = EVENT_NOTE_LIMIT - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// Publishes Events regarding one Node.
pub(super) struct NodeEvents {
    recorder: Recorder,
    node: String,
}

impl NodeEvents {
    /// Events about `node` through `client`.
    pub(super) fn new(client: kube::Client, node: &str) -> NodeEvents {
        let reporter = Reporter {
            controller: super::REPORTER.into(),
            instance: Some(node.to_string()),
        };
        NodeEvents {
            recorder: Recorder::new(client, reporter),
            node: node.to_string(),
        }
    }

    /// Records one Event (the Node's `uid` when known); a failure is logged, never fatal.
    pub(super) async fn publish(
        &self,
        uid: Option<String>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let node = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            uid,
            ..ObjectReference::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(event_note(note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &node).await {
            debug!(error = %e, reason, "cannot record event");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use coldstart_fakeapi::{FakeApi, Options};
    use kube::{Client, Config};
    use serde_json::Value;

    use super::*;

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_char_boundary() {
        assert_eq!(event_note("short".into()), "short");
        let exact = "x".repeat(EVENT_NOTE_LIMIT);
        assert_eq!(event_note(exact.clone()), exact);
        let cut = event_note("é".repeat(1500));
        assert!(cut.len() <= EVENT_NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
    }

    /// The fake API server refuses a note over 1024 bytes as the real one does; ours is
    /// stored, cut.
    #[tokio::test]
    async fn a_2_kb_note_is_stored_cut() {
        let api = FakeApi::start(Options::default()).await.unwrap();
        let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
        let events = NodeEvents::new(client, "n1");
        let long = format!("model m: {}", "registry said no; ".repeat(120));
        assert!(long.len() > 2000);
        events
            .publish(
                None,
                EventType::Warning,
                "ModelFailed",
                "Warm",
                long.clone(),
            )
            .await;
        let stored = api.list("events.events.k8s.io").unwrap();
        assert_eq!(stored.len(), 1, "{stored:?}");
        let note = stored[0]["note"].as_str().unwrap();
        assert_eq!(note.len(), EVENT_NOTE_LIMIT);
        assert!(long.starts_with(note.trim_end_matches("...")));
        assert_eq!(stored[0]["regarding"]["name"], Value::from("n1"));
    }
}
