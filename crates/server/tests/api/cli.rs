//! The `herald` binary: `herald token`, start-up, signals, settings errors.

use super::*;

/// Its output once it holds `needle` (the lines after "listening on" come a little later).
async fn logged(herald: &Herald, needle: &str) -> String {
    within(WAIT, "a log line", async {
        loop {
            let output = herald.output();
            if output.contains(needle) {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Runs `herald token` with `args` in `cwd`.
fn herald_token(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    herald_command().arg("token").args(args).current_dir(cwd).output().expect("run herald token")
}

/// A token's claims, checked with `secret` (any `aud`).
fn claims_of(token: &str, secret: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("a token signed with the secret").claims
}

#[tokio::test]
async fn herald_token_signs_with_the_servers_key_and_claims_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cwd, elsewhere) = (dir.path().join("server"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&server_cwd).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\njwt-issuer = \"https://issuer.test\"\njwt-audience = \"herald-test\"\n",
            data.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let mut herald = Herald::run(&["--config", config_arg], &server_cwd);
    let log = logged(&herald, "signing key: ").await;
    assert!(log.contains("signing key: generated in"), "{log}");
    let secret_file = data.join("jwt-secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the generated secret is private to its owner");

    // Minted elsewhere with the server's config file: its key, iss and aud; comma lists split.
    let output =
        herald_token(&["--config", config_arg, "--sub", "x", "--publish", "a,b", "--subscribe", "b"], &elsewhere);
    assert!(output.status.success(), "herald token failed: {}", show(&output.stderr));
    let token = show(&output.stdout).trim().to_owned();
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let claims = claims_of(&token, secret.trim());
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some("https://issuer.test"), Some("herald-test")));
    assert_eq!(claims["herald"]["publish"], json!(["a", "b"]), "{claims}");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "herald token made nothing where it ran");

    let http = client();
    let mut sse = Sse::open(http.get(herald.url("/topics/b/events")).bearer_auth(&token)).await;
    for topic in ["a", "b"] {
        let response = http
            .post(herald.url(&format!("/topics/{topic}/events")))
            .bearer_auth(&token)
            .json(&json!({"data": topic}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "publish to {topic}");
    }
    assert_eq!(sse.next().await.data, "b");

    // The same key without the claim settings: the server wants its iss.
    let data_arg = data.to_str().unwrap();
    let output = herald_token(&["--data-dir", data_arg, "--sub", "x", "--publish", "a"], &elsewhere);
    assert!(output.status.success(), "{}", show(&output.stderr));
    let bare = show(&output.stdout).trim().to_owned();
    let refused = http.post(herald.url("/topics/a/events")).bearer_auth(&bare).json(&json!({"data": 1})).send();
    let message = expect_invalid_token(refused.await.unwrap()).await;
    assert!(message.contains("`iss`") || message.contains("`aud`"), "{message}");

    // Another key: the 401 says where keys come from.
    let other = "another-secret-0123456789abcdef-0123456789";
    let output = herald_token(&["--jwt-secret", other, "--sub", "y", "--publish", "a"], &elsewhere);
    let foreign = show(&output.stdout).trim().to_owned();
    let refused = http.post(herald.url("/topics/a/events")).bearer_auth(&foreign).json(&json!({"data": 1})).send();
    let message = expect_invalid_token(refused.await.unwrap()).await;
    assert!(message.contains("--jwt-secret") && message.contains("--data-dir"), "{message}");

    // A second start reuses the key, and says so.
    herald.terminate();
    herald.wait_exit(Duration::from_secs(10)).await;
    let again = Herald::run(&["--config", config_arg], &server_cwd);
    let log = logged(&again, "signing key: ").await;
    assert!(log.contains("signing key: loaded from") && !log.contains("generated in"), "{log}");
    assert!(log.contains("herald token"), "the start-up log says how to mint a token:\n{log}");
    let still = http.post(again.url("/topics/a/events")).bearer_auth(&token).json(&json!({"data": 2})).send();
    assert_eq!(still.await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn herald_token_never_makes_a_key_and_refuses_a_token_that_allows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald_token(&["--sub", "x", "--publish", "a"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    let looked = std::path::absolute(dir.path().join("herald-data/jwt-secret")).unwrap();
    assert!(stderr.contains(&looked.display().to_string()), "says where it looked: {stderr}");
    for flag in ["--data-dir", "--config", "--jwt-secret"] {
        assert!(stderr.contains(flag), "names {flag}: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no data dir, no secret made");

    let output = herald_token(&["--jwt-secret", SECRET, "--sub", "x"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    for flag in ["--publish", "--subscribe", "--admin"] {
        assert!(stderr.contains(flag), "names {flag}: {stderr}");
    }
    let output =
        herald_token(&["--jwt-secret", SECRET, "--sub", "x", "--subscribe", "a.*,b", "--subscribe", "c"], dir.path());
    assert!(output.status.success(), "{}", show(&output.stderr));
    let claims = claims_of(show(&output.stdout).trim(), SECRET);
    assert_eq!(claims["herald"]["subscribe"], json!(["a.*", "b", "c"]), "{claims}");
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none(), "{claims}");
}

#[tokio::test]
async fn a_start_that_cannot_listen_leaves_nothing_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (vec!["--listen", port.as_str()], "--listen"),
        (vec!["--listen", "127.0.0.1:0", "--internal-listen", port.as_str()], "--internal-listen"),
    ] {
        let output = herald_command().args(args).current_dir(dir.path()).output().unwrap();
        let stderr = show(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("cannot listen on {port} ({flag})")), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "a failed start left {left:?}");
    }
}

#[tokio::test]
async fn listen_takes_a_host_name_and_an_unknown_one_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::run(&["--memory", "--listen", "localhost:0", "--jwt-secret", SECRET], dir.path());
    assert!(herald.addr.ip().is_loopback(), "{}", herald.addr);
    let health = client().get(herald.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let output = herald_command()
        .args(["--memory", "--listen", "no-such-host.invalid:8080", "--internal-listen", "nor-this.invalid:9090"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    assert!(stderr.contains("--listen: cannot resolve `no-such-host.invalid`"), "{stderr}");
    assert!(stderr.contains("--internal-listen: cannot resolve `nor-this.invalid`"), "{stderr}");
}

#[tokio::test]
async fn listen_may_repeat_and_every_address_serves_the_same_hub() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--memory", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET];
    let herald = Herald::run(&args, dir.path());
    let output = logged(&herald, "store:").await;
    let addresses: Vec<String> = output
        .lines()
        .filter_map(|line| line.split("listening on http://").nth(1))
        .map(|rest| rest.split(|c: char| c.is_whitespace() || c == '\u{1b}').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(addresses.len(), 2, "one line per address:\n{output}");
    assert_ne!(addresses[0], addresses[1]);
    let token = sign_hs256(&claims(json!({})), SECRET);
    let http = client();
    let mut on_second =
        Sse::open(http.get(format!("http://{}/topics/two/events", addresses[1])).bearer_auth(&token)).await;
    let published = http
        .post(format!("http://{}/topics/two/events", addresses[0]))
        .bearer_auth(&token)
        .json(&json!({"data": "through the first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::CREATED);
    assert_eq!(on_second.next().await.data, "through the first");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut herald = Herald::run(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--shutdown-grace",
            "3s",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    let token = sign_hs256(&claims(json!({})), SECRET);
    let http = client();
    let mut sse = Sse::open(http.get(herald.url("/topics/term/events")).bearer_auth(&token)).await;
    let response = http
        .post(herald.url("/topics/term/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(sse.next().await.data, "hi");

    let started = Instant::now();
    herald.terminate();
    let rest = sse.until_end(Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest:?}");
    let status = herald.wait_exit(Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "exit status; output:\n{}", herald.output());
    assert!(started.elapsed() < Duration::from_secs(3), "within the grace period: {:?}", started.elapsed());
}

#[tokio::test]
async fn invalid_settings_exit_1_and_list_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        herald_command().args(["--listen", "nope", "--heartbeat", "soon"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    assert!(stderr.contains("--listen") && stderr.contains("nope"), "{stderr}");
    assert!(stderr.contains("--heartbeat") && stderr.contains("soon"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 2, "{stderr}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created in the working dir");
}
