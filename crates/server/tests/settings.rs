//! Settings through the real binary: every setting `herald serve --help`
//! lists is accepted as a flag, as a `HERALD_*` variable and as a key of the
//! `--config` file, and takes effect (`--check-config` prints the resulting
//! configuration); sources rank flags, variables, file, defaults; every
//! problem is reported at once; `herald token` reads the same sources.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const SECRET: &str = "settings-test-secret-0123456789abcdef";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// The settings `flag`'s sample needs beside it.
fn companion(flag: &str) -> Vec<(String, String)> {
    match flag {
        "tls-key" => vec![("tls-cert".into(), keys_dir().join("tls-cert.pem").display().to_string())],
        "acme-email" | "acme-directory" | "acme-directory-ca" => {
            vec![("acme-domain".into(), "events.example.com".into())]
        }
        _ => Vec::new(),
    }
}

/// A value valid for `flag`, and what `--check-config` prints once it took
/// effect (never printed with the defaults: checked).
fn sample(flag: &str) -> Option<(String, String)> {
    let pair = |value: &str, shown: &str| Some((value.to_owned(), shown.to_owned()));
    match flag {
        "listen" => pair("127.0.0.1:9123", "127.0.0.1:9123,"),
        "internal-listen" => pair("127.0.0.1:9124", "127.0.0.1:9124,"),
        // A certificate and its key in one file: --tls-cert alone suffices.
        "tls-cert" => {
            let file = keys_dir().join("tls-combined.pem");
            Some((file.display().to_string(), format!("cert: {file:?},")))
        }
        "tls-key" => {
            let key = keys_dir().join("tls-key.pem");
            Some((key.display().to_string(), format!("key: {key:?},")))
        }
        "acme-domain" => pair("Events.Example.com", "\"events.example.com\","),
        "acme-email" => pair("ops@example.com", "\"ops@example.com\","),
        "acme-directory" => pair("https://ca.example.com/dir", "\"https://ca.example.com/dir\","),
        // Any certificate will do as the root to trust.
        "acme-directory-ca" => {
            let file = keys_dir().join("tls-cert.pem");
            Some((file.display().to_string(), format!("{file:?},")))
        }
        "data-dir" => pair("some/where/data", "data_dir: \"some/where/data\","),
        "memory" => pair("true", "store: Memory,"),
        "sqlite-synchronous" => pair("normal", "sqlite_synchronous: Normal,"),
        "store" => pair("sqlite:else/where", "data_dir: \"else/where\","),
        "redis-prefix" => pair("shared.a", "prefix: \"shared.a\","),
        "redis-timeout" => pair("3s", "timeout: 3s,"),
        "redis-feed-max-lag" => pair("9s", "feed_max_lag: 9s,"),
        "redis-durable-restarts" => pair("true", "durable_restarts: true,"),
        "jwt-secret" => pair(SECRET, "Secret(***)"),
        "jwt-public-key" => {
            let key = keys_dir().join("rsa-public.pem");
            Some((key.display().to_string(), format!("path: {:?},", key)))
        }
        "jwt-algorithm" => pair("HS512", "jwt_algorithm: HS512,"),
        "jwt-issuer" => pair("https://issuer.test", "\"https://issuer.test\","),
        "jwt-audience" => pair("audience.test", "\"audience.test\","),
        "jwt-leeway" => pair("9s", "jwt_leeway: 9s,"),
        "public-subscribe" => pair("news.*", "\"news.*\","),
        "heartbeat" => pair("7s", "heartbeat: 7s,"),
        "retry" => pair("4s", "retry: 4s,"),
        "cors-origins" => pair("https://app.test", "\"https://app.test\","),
        "cors-credentials" => pair("true", "cors_credentials: true,"),
        "trusted-proxies" => pair("10.1.2.3", "10.1.2.3,"),
        "max-connections" => pair("1231", "max_connections: 1231,"),
        "max-streams-per-ip" => pair("17", "max_streams_per_ip: 17,"),
        "max-streams-per-connection" => pair("18", "max_streams_per_connection: 18,"),
        "max-body-bytes" => pair("2000000", "max_body_bytes: 2000000,"),
        "max-event-bytes" => pair("1000", "max_event_bytes: 1000,"),
        "max-topics-per-subscription" => pair("9", "max_topics_per_subscription: 9,"),
        "max-batch-events" => pair("33", "max_batch_events: 33,"),
        "max-topics" => pair("77", "max_topics: 77,"),
        "ring-events" => pair("55", "max_events: 55,"),
        "ring-bytes" => pair("65536", "max_bytes: 65536,"),
        "max-delivery-bytes" => pair("4096", "max_delivery_bytes: 4096,"),
        "catch-up-cache-bytes" => pair("40000000", "catch_up_cache_bytes: 40000000,"),
        "retention-events" => pair("99", "max_events_per_topic: 99,"),
        "retention-age" => pair("2h", "7200s,"),
        "idempotency-ttl" => pair("1h", "idempotency_ttl: 3600s,"),
        "retention-hold-bytes" => pair("12345", "hold_bytes: 12345,"),
        "header-timeout" => pair("11s", "header_timeout: 11s,"),
        "body-timeout" => pair("12s", "body_timeout: 12s,"),
        "idle-timeout" => pair("61s", "idle_timeout: 61s,"),
        "stall-timeout" => pair("31s", "stall_timeout: 31s,"),
        "stream-max-duration" => pair("5m", "300s,"),
        "shutdown-grace" => pair("13s", "shutdown_grace: 13s,"),
        "dashboard-rows" => pair("8", "dashboard_rows: 8,"),
        "log" => pair("debug", "log: \"debug\","),
        "mercure" => pair("true", "enabled: true,"),
        "mercure-anonymous" => pair("true", "anonymous: true,"),
        "mercure-publish-origins" => pair("https://pub.test", "\"https://pub.test\","),
        "mercure-publisher-jwt-key" => pair(SECRET, "publisher_key: secret ***,"),
        "mercure-publisher-jwt-alg" => pair("HS512", "publisher_key: Herald's key with HS512,"),
        "mercure-subscriber-jwt-key" => pair(SECRET, "subscriber_key: secret ***,"),
        "mercure-subscriber-jwt-alg" => pair("HS384", "subscriber_key: Herald's key with HS384,"),
        "mercure-cookie-name" => pair("appAuth", "cookie_name: \"appAuth\","),
        "mercure-query-token" => pair("false", "query_token: false,"),
        "mercure-gap-event" => pair("false", "gap_event: false,"),
        "mercure-subscriptions" => pair("true", "subscriptions: true,"),
        "mercure-retention-events" => pair("98", "max_events: 98,"),
        "mercure-retention-age" => pair("3h", "10800s,"),
        _ => None,
    }
}

/// `herald` with `args` in `dir`, with no `HERALD_*` variable but `env`.
fn herald(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("HERALD_")) {
        command.env_remove(name);
    }
    command.args(args).envs(env.iter().copied()).current_dir(dir).output().expect("herald runs")
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The configuration `herald serve --check-config` prints, or a panic with its errors.
fn checked(args: &[&str], env: &[(&str, &str)], dir: &Path) -> String {
    let mut all = vec!["serve", "--check-config"];
    all.extend_from_slice(args);
    let output = herald(&all, env, dir);
    assert!(output.status.success(), "{args:?} {env:?}: {}", show(&output.stderr));
    show(&output.stdout)
}

/// The flags a help text lists, each with whether it takes a list.
fn flags_in_help(help: &str) -> Vec<(String, bool)> {
    help.lines()
        .map(str::trim_start)
        .filter_map(|line| line.strip_prefix("-h, ").or(Some(line)))
        .filter_map(|line| line.strip_prefix("--"))
        .map(|line| {
            let name = line.split([' ', '<', '[']).next().unwrap_or_default();
            let head = line.split("  ").next().unwrap_or_default();
            (name.to_owned(), head.contains("..."))
        })
        .collect()
}

/// A TOML line setting `key` as a file would: numbers and booleans bare, lists as arrays.
fn toml_line(key: &str, value: &str, list: bool) -> String {
    let literal = if value.parse::<i64>().is_ok() || value == "true" {
        value.to_owned()
    } else {
        Value::String(value.to_owned()).to_string()
    };
    if list { format!("{key} = [{literal}]\n") } else { format!("{key} = {literal}\n") }
}

#[test]
fn every_setting_in_help_is_accepted_as_a_flag_a_variable_and_a_file_key() {
    let dir = tempfile::tempdir().unwrap();
    let help = herald(&["serve", "--help"], &[], dir.path());
    assert!(help.status.success());
    let help = show(&help.stdout);
    let flags = flags_in_help(&help);
    assert!(flags.len() > 30, "{flags:?}\n{help}");
    let baseline = checked(&[], &[], dir.path());
    let file = dir.path().join("herald.toml");
    let mut walked = 0;
    for (flag, list) in &flags {
        if ["help", "check-config", "config"].contains(&flag.as_str()) {
            continue; // not settings; `--config` is walked below
        }
        let variable = format!("HERALD_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&format!("[env: {variable}")), "--{flag} names {variable} in --help");
        let Some((value, shown)) = sample(flag) else { panic!("give --{flag} a sample value in `sample`") };
        assert!(!baseline.contains(&shown), "--{flag}: `{shown}` is printed with the defaults already");

        // A setting that takes effect only beside another one.
        let companion = companion(flag);
        let companion_flag = companion.iter().map(|(f, v)| format!("--{f}={v}")).collect::<Vec<_>>();
        let companion_variables: Vec<(String, String)> = companion
            .iter()
            .map(|(f, v)| (format!("HERALD_{}", f.to_uppercase().replace('-', "_")), v.clone()))
            .collect();
        let companion_lines: String = companion.iter().map(|(f, v)| toml_line(f, v, false)).collect();

        let flag_args: Vec<String> = [format!("--{flag}={value}")].into_iter().chain(companion_flag).collect();
        let as_flag = checked(&flag_args.iter().map(String::as_str).collect::<Vec<_>>(), &[], dir.path());
        assert!(as_flag.contains(&shown), "--{flag}={value} did not print `{shown}`:\n{as_flag}");
        let mut variables: Vec<(&str, &str)> =
            companion_variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        variables.push((&variable, &value));
        let as_variable = checked(&[], &variables, dir.path());
        assert!(as_variable.contains(&shown), "{variable}={value} did not print `{shown}`:\n{as_variable}");
        std::fs::write(&file, toml_line(flag, &value, *list) + &companion_lines).unwrap();
        let in_file = checked(&["--config", file.to_str().unwrap()], &[], dir.path());
        assert!(in_file.contains(&shown), "`{flag}` in a config file did not print `{shown}`:\n{in_file}");
        walked += 1;
    }
    assert_eq!(walked, flags.len() - 3, "every flag but --help, --check-config and --config is a setting");

    // `--config` itself: as a flag (above) and as HERALD_CONFIG.
    std::fs::write(&file, "heartbeat = \"6s\"\n").unwrap();
    let from_variable = checked(&[], &[("HERALD_CONFIG", file.to_str().unwrap())], dir.path());
    assert!(from_variable.contains("heartbeat: 6s,"), "{from_variable}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["herald.toml"], "--check-config creates nothing");
}

#[test]
fn flags_win_over_variables_which_win_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9001\"\nretry = 8\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let variable = [("HERALD_LISTEN", "127.0.0.1:9002")];
    let flag = ["--listen", "127.0.0.1:9003"];

    assert!(checked(&[], &[], dir.path()).contains("    127.0.0.1:8080,"));
    let file_only = checked(&config, &[], dir.path());
    assert!(file_only.contains("    127.0.0.1:9001,") && file_only.contains("retry: 8s,"), "{file_only}");
    let with_variable = checked(&config, &variable, dir.path());
    assert!(with_variable.contains("    127.0.0.1:9002,"), "{with_variable}");
    assert!(with_variable.contains("retry: 8s,"), "the file still fills the rest: {with_variable}");
    let all = checked(&[&config[..], &flag[..]].concat(), &variable, dir.path());
    assert!(all.contains("    127.0.0.1:9003,"), "{all}");
}

#[test]
fn every_invalid_setting_from_every_source_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "lisen = \"127.0.0.1:1\"\ncolour = 1\nretry = \"later\"\nring-events = 0\ninternal-listen = \"nowhere\"\n\
         heartbeat = [\"1s\"]\n",
    )
    .unwrap();
    let output = herald(
        &["serve", "--check-config", "--config", file.to_str().unwrap(), "--stall-timeout", "soon"],
        &[("HERALD_MAX_CONNECTIONS", "many")],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    let needles = [
        "unknown setting `lisen`",
        "unknown setting `colour`",
        "--heartbeat in config file",
        "--retry: `later`",
        "--ring-events: must be at least 1",
        "--internal-listen: `nowhere`",
        "--stall-timeout: `soon`",
        "--max-connections: `many`",
    ];
    for needle in needles {
        assert!(stderr.contains(needle), "{needle}:\n{stderr}");
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), needles.len(), "{stderr}");
    assert!(output.stdout.is_empty(), "no configuration printed");
}

#[test]
fn herald_token_offers_what_minting_needs_and_reads_the_servers_sources() {
    let dir = tempfile::tempdir().unwrap();
    let help = show(&herald(&["token", "--help"], &[], dir.path()).stdout);
    let mut flags: Vec<String> = flags_in_help(&help).into_iter().map(|(flag, _)| flag).collect();
    flags.sort();
    let expected = [
        "admin",
        "config",
        "data-dir",
        "help",
        "jwt-algorithm",
        "jwt-audience",
        "jwt-issuer",
        "jwt-public-key",
        "jwt-secret",
        "private-key",
        "publish",
        "sub",
        "subscribe",
        "ttl",
    ];
    assert_eq!(flags, expected, "{help}");

    // The server's file, server-only settings and all (an invalid one too:
    // minting does not use it), with the key and issuer from the environment.
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "internal-listen = \"127.0.0.1:9\"\nsqlite-synchronous = \"normal\"\nheartbeat = \"soon\"\n\
         jwt-audience = \"audience.test\"\n",
    )
    .unwrap();
    let env = [("HERALD_JWT_SECRET", SECRET), ("HERALD_JWT_ISSUER", "https://issuer.test")];
    let args = ["token", "--config", file.to_str().unwrap(), "--sub", "me", "--publish", "a"];
    let output = herald(&args, &env, dir.path());
    assert!(output.status.success(), "{}", show(&output.stderr));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["audience.test"]);
    validation.set_issuer(&["https://issuer.test"]);
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let token = show(&output.stdout);
    let claims = jsonwebtoken::decode::<Value>(token.trim(), &key, &validation).expect("signed with the secret");
    assert_eq!(claims.claims["sub"], "me");

    // A key no server knows is refused by token too, with the key's problems.
    std::fs::write(&file, "lisen = \"x\"\njwt-algorithm = \"none\"\n").unwrap();
    let output = herald(&args, &env, dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    assert!(stderr.contains("unknown setting `lisen`") && stderr.contains("never accepted"), "{stderr}");
}
