//! What the warmer lets go of when a model goes: its metric series.

use super::*;

/// One pass that knows the status reported before it, as both modes run it.
async fn pass_after(w: &mut TestWarmer, models: &[ColdModel], current: Option<&Plan>) -> Plan {
    let labels = BTreeMap::new();
    let inputs = PassInputs {
        labels: &labels,
        models,
        current: current.map(|p| &p.status),
        gpu: None,
        warming_deadline: None,
        now: Timestamp::now(),
    };
    w.pass(inputs, &limits(), &NoSecrets).await
}

#[tokio::test(start_paused = true)]
async fn a_removed_models_series_go_with_it_even_a_failed_one() {
    let mut r = rig();
    r.weights
        .state()
        .fail_syncs
        .push_back(WeightsFault::HubDown);
    let models = vec![model(None, None)];
    let mut last = pass_after(&mut r.warmer, &models, None).await;
    for _ in 0..100 {
        if last.status.models[0].phase == Phase::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = pass_after(&mut r.warmer, &models, Some(&last)).await;
    }
    assert_eq!(last.status.models[0].phase, Phase::Failed, "{last:?}");
    let text = r.warmer.metrics.encode().unwrap();
    assert!(
        text.contains("phase=\"Failed\"} 1"),
        "the failure is a series first:\n{text}"
    );
    // Unwarmed: the next pass reports no model, and no series names it.
    let plan = pass_after(&mut r.warmer, &[], Some(&last)).await;
    assert!(plan.status.models.is_empty());
    let text = r.warmer.metrics.encode().unwrap();
    let name = name_of(&models[0]);
    assert!(
        !text
            .lines()
            .any(|l| !l.starts_with('#') && l.contains(&format!("model=\"{name}\""))),
        "series left for {name}:\n{text}"
    );
}
