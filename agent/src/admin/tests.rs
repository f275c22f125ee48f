use super::*;

async fn start(state: AdminState) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move {
        serve(listener, state, t).await.expect("serves");
    });
    (base, token, task)
}

fn state() -> AdminState {
    AdminState {
        heartbeat: Heartbeat::new(),
        ready_timeout: Duration::from_secs(30),
        metrics: Arc::new(Metrics::new()),
    }
}

#[tokio::test]
async fn endpoints_answer() {
    let st = state();
    let (base, token, task) = start(st.clone()).await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);

    let r = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    let body = r.text().await.expect("body");
    assert!(body.contains("no reconcile pass"), "{body}");

    st.heartbeat.beat(Instant::now());
    let r = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);

    st.metrics.pass(true, 0.5);
    let r = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(OPENMETRICS)
    );
    let body = r.text().await.expect("body");
    assert!(
        body.contains("coldstart_reconcile_passes_total{outcome=\"ok\"} 1"),
        "{body}"
    );

    let r = http.get(format!("{base}/nope")).send().await.expect("404");
    assert_eq!(r.status(), 404);

    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stops on cancel")
        .expect("task");
}
