//! The browser's EventSource (npm `eventsource` under node).

use super::*;

#[tokio::test]
async fn browser_eventsource_reconnects_and_resumes_without_loss_or_duplicates() {
    const EVENTS: usize = 300;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/reconnect.mjs");
    let modules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/node_modules/eventsource");
    if std::process::Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED browser_eventsource_reconnects…: `node` is not installed; run scripts/install-test-deps");
        return;
    }
    assert!(modules.exists(), "npm packages of tests/e2e are missing: run scripts/install-test-deps");

    let server = TestServer::start_with(|c| {
        c.stream_max_duration = Some(Duration::from_secs(1));
        c.retry = Duration::from_millis(50);
    })
    .await;
    let token = server.token(&[], &["e2e"], false, HOUR);
    let url = server.url(&format!("/topics/e2e/events?access_token={token}"));
    let mut node = std::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg((EVENTS - 1).to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop_guard();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let stdout = node.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|_| json!({"type": "unparsed", "line": line}));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let first = within(WAIT, "the EventSource to open", rx.recv()).await.expect("node printed a line");
    assert_eq!(first["type"], "open", "{first}");

    // Publish over ~4 s while the server cuts every stream after 1 s.
    let mut ids = Vec::with_capacity(EVENTS);
    let mut tick = tokio::time::interval(Duration::from_millis(13));
    for i in 0..EVENTS {
        tick.tick().await;
        ids.push(server.publish_data("e2e", &i.to_string()).await);
    }
    let mut lines = vec![first];
    within(Duration::from_secs(20), "the EventSource to receive the last event", async {
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
    })
    .await;
    let status = within(WAIT, "node to exit", async {
        loop {
            if let Some(status) = node.0.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "node exited with {status}; lines: {lines:?}");

    let received: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| (l["id"].as_str().unwrap().to_owned(), l["data"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i.to_string())).collect();
    assert_eq!(received.len(), EVENTS, "every event exactly once");
    assert_eq!(received, expected, "in order, none lost, none repeated");
    let opens = lines.iter().filter(|l| l["type"] == "open").count();
    assert!(opens >= 3, "at least two reconnects happened: {opens} opens");
    assert!(!lines.iter().any(|l| l["type"] == "gap" || l["type"] == "unparsed"), "{lines:?}");
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

trait SpawnGuarded {
    fn kill_on_drop_guard(&mut self) -> KillOnDrop;
}

impl SpawnGuarded for std::process::Command {
    fn kill_on_drop_guard(&mut self) -> KillOnDrop {
        KillOnDrop(self.spawn().expect("spawn"))
    }
}
