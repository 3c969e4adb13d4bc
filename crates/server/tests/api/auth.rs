//! Tokens: where they come from, what makes one invalid, algorithms and keys.

use super::*;

#[tokio::test]
async fn token_from_header_query_or_cookie() {
    let server = TestServer::start().await;
    let token = server.token(&[], &["t"], false, HOUR);
    let url = server.url("/topics/t/events");
    let mut by_header = Sse::open(server.client.get(&url).bearer_auth(&token)).await;
    let mut by_query = Sse::open(server.client.get(format!("{url}?access_token={token}"))).await;
    let mut by_cookie =
        Sse::open(server.client.get(&url).header(header::COOKIE, format!("theme=dark; herald_token={token}; x=1")))
            .await;
    let id = server.publish_data("t", "all three").await;
    for sse in [&mut by_header, &mut by_query, &mut by_cookie] {
        let event = sse.next().await;
        assert_eq!((event.id.as_str(), event.data.as_str()), (id.as_str(), "all three"));
    }
    // A bad token in any of the three places is refused.
    let bad = sign_hs256(&claims(json!({})), "another-secret-another-secret-another");
    expect_invalid_token(server.client.get(&url).bearer_auth(&bad).send().await.unwrap()).await;
    expect_invalid_token(server.client.get(format!("{url}?access_token={bad}")).send().await.unwrap()).await;
    expect_invalid_token(
        server.client.get(&url).header(header::COOKIE, format!("herald_token={bad}")).send().await.unwrap(),
    )
    .await;
    // No token at all: 401 missing_token with a plain Bearer challenge.
    let response = server.client.get(&url).send().await.unwrap();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap().to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn public_subscribe_patterns_need_no_token() {
    let server = TestServer::start_with(|c| c.public_subscribe = vec!["public.*".parse().unwrap()]).await;
    let mut sse = Sse::open(server.client.get(server.url("/events?topic=public.news"))).await;
    let mut pattern = Sse::open(server.client.get(server.url("/events?topic=public.*"))).await;
    let id = server.publish_data("public.news", "for everyone").await;
    assert_eq!(sse.next().await.id, id);
    assert_eq!(pattern.next().await.id, id);

    let private = server.client.get(server.url("/topics/private/events")).send().await.unwrap();
    expect_error(private, StatusCode::UNAUTHORIZED, "missing_token").await;
    let mixed = server.client.get(server.url("/events?topic=public.news&topic=private")).send().await.unwrap();
    expect_error(mixed, StatusCode::UNAUTHORIZED, "missing_token").await;
    let wider = server.client.get(server.url("/events?topic=*")).send().await.unwrap();
    expect_error(wider, StatusCode::UNAUTHORIZED, "missing_token").await;
    // Publishing always needs a token.
    let publish =
        server.client.post(server.url("/topics/public.news/events")).json(&json!({"data": "x"})).send().await.unwrap();
    expect_error(publish, StatusCode::UNAUTHORIZED, "missing_token").await;
    // A token that is sent is checked, even where none is needed.
    let garbage =
        server.client.get(server.url("/topics/public.news/events")).bearer_auth("not.a.jwt").send().await.unwrap();
    expect_invalid_token(garbage).await;
}

#[tokio::test]
async fn an_open_stream_ends_with_herald_expired_when_its_token_expires() {
    let server = TestServer::start().await;
    let token = server.token(&[], &["exp"], false, Duration::from_secs(2));
    let started = Instant::now();
    let mut sse = Sse::open(server.client.get(server.url("/topics/exp/events")).bearer_auth(&token)).await;
    let id = server.publish_data("exp", "before expiry").await;
    assert_eq!(sse.next().await.id, id);
    let rest = sse.until_end(Duration::from_secs(6)).await;
    let elapsed = started.elapsed();
    assert_eq!(rest.len(), 1, "one last event, then the end: {rest:?}");
    assert_eq!(rest[0].event, "herald.expired");
    let data: Value = serde_json::from_str(&rest[0].data).expect("expired data is JSON");
    assert_eq!(data["reason"], "token_expired", "{data}");
    assert!(elapsed >= Duration::from_millis(900), "not before the token expires ({elapsed:?})");
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let server = TestServer::start().await;
    let publish = |token: String| {
        server
            .client
            .post(server.url("/topics/sec/events"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .json(&json!({"data": "x"}))
            .send()
    };
    let subscribe = |token: String| server.client.get(server.url("/topics/sec/events")).bearer_auth(token).send();

    let none_token =
        format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims(json!({})).to_string().as_bytes()));
    let hs512 = sign(&claims(json!({})), Algorithm::HS512, &EncodingKey::from_secret(SECRET.as_bytes()));
    let other_secret = sign_hs256(&claims(json!({})), "a-completely-different-secret-0123456789");
    let expired = sign_hs256(&claims(json!({"exp": now() - 120})), SECRET);
    let not_yet = sign_hs256(&claims(json!({"nbf": now() + 600})), SECRET);
    let no_exp = {
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("exp");
        sign_hs256(&c, SECRET)
    };
    let bad_grants = sign_hs256(&claims(json!({"herald": {"publish": ["a b"]}})), SECRET);
    let tampered = {
        let good = server.root_token();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64url(claims(json!({"sub": "mallory"})).to_string().as_bytes());
        parts.join(".")
    };
    let cases = [
        ("alg none", none_token),
        ("HS512 to an HS256 server", hs512),
        ("signed with another secret", other_secret),
        ("expired", expired),
        ("nbf in the future", not_yet),
        ("no exp", no_exp),
        ("bad patterns in grants", bad_grants),
        ("tampered claims", tampered),
        ("garbage", "garbage".to_owned()),
    ];
    for (what, token) in cases {
        let message = expect_invalid_token(publish(token.clone()).await.unwrap()).await;
        assert!(message.starts_with("invalid token"), "{what}: {message}");
        expect_invalid_token(subscribe(token).await.unwrap()).await;
    }
    // A malformed Authorization header.
    let basic = server
        .client
        .post(server.url("/topics/sec/events"))
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_invalid_token(basic).await;
    // The control: a good token works.
    let good = publish(sign_hs256(&claims(json!({})), SECRET)).await.unwrap();
    assert_eq!(good.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_token_accepted_before_is_refused_once_it_expires() {
    // Verified tokens are remembered; an entry must not outlive the token.
    let server = TestServer::start_with(|c| c.jwt_leeway = Duration::ZERO).await;
    let token = sign_hs256(&claims(json!({"exp": now() + 3})), SECRET);
    let publish = || {
        server.client.post(server.url("/topics/brief/events")).bearer_auth(&token).json(&json!({"data": "x"})).send()
    };
    assert_eq!(publish().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(publish().await.unwrap().status(), StatusCode::CREATED, "again, from the verifier's memory");
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let refused = publish().await.unwrap();
    let message = expect_invalid_token(refused).await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let server = TestServer::start_with(|c| {
        c.jwt_issuer = Some("https://issuer.example".into());
        c.jwt_audience = Some("herald".into());
    })
    .await;
    let publish = |claims_extra: Value| {
        server
            .client
            .post(server.url("/topics/iss/events"))
            .bearer_auth(sign_hs256(&claims(claims_extra), SECRET))
            .json(&json!({"data": "x"}))
            .send()
    };
    let ok = publish(json!({"iss": "https://issuer.example", "aud": "herald"})).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    for extra in [
        json!({"iss": "https://evil.example", "aud": "herald"}),
        json!({"iss": "https://issuer.example", "aud": "someone-else"}),
        json!({"aud": "herald"}),
        json!({"iss": "https://issuer.example"}),
    ] {
        expect_invalid_token(publish(extra).await.unwrap()).await;
    }
    // A token from `herald token` style minting (no iss/aud) is refused too.
    expect_invalid_token(
        server
            .client
            .post(server.url("/topics/iss/events"))
            .bearer_auth(server.root_token())
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn grants_that_do_not_cover_the_topic_are_403() {
    let server = TestServer::start().await;
    let token = server.token(&["orders.*"], &["orders.eu"], false, HOUR);
    let publish = server
        .client
        .post(server.url("/topics/billing/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
    for path in ["/topics/orders.us/events", "/events?topic=orders.*", "/events?topic=orders.eu&topic=billing"] {
        let response = server.client.get(server.url(path)).bearer_auth(&token).send().await.unwrap();
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // What it does allow works.
    let ok = server
        .client
        .post(server.url("/topics/orders.new/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    Sse::open(server.client.get(server.url("/topics/orders.eu/events")).bearer_auth(&token)).await;
    // A subscribe-only token cannot publish.
    let reader = server.token(&[], &["*"], false, HOUR);
    let publish = server
        .client
        .post(server.url("/topics/orders.eu/events"))
        .bearer_auth(&reader)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
    // Admin may subscribe to anything, but publishing still needs a grant.
    let admin = server.token(&[], &[], true, HOUR);
    Sse::open(server.client.get(server.url("/events?topic=*")).bearer_auth(&admin)).await;
    let publish = server
        .client
        .post(server.url("/topics/orders.eu/events"))
        .bearer_auth(&admin)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
}

/// A server verifying `alg` tokens with the public key in `public`.
async fn asymmetric_server(public: &str, alg: Algorithm) -> TestServer {
    TestServer::start_with(|c| {
        c.jwt_key = JwtKey::PublicKey { path: key_path(public), pem: key_pem(public) };
        c.jwt_algorithm = alg;
    })
    .await
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted_with_the_matching_key() {
    let cases = [
        ("rsa", Algorithm::RS256, EncodingKey::from_rsa_pem(&key_pem("rsa-private.pem")).unwrap()),
        ("ec", Algorithm::ES256, EncodingKey::from_ec_pem(&key_pem("ec-private.pem")).unwrap()),
        ("ed25519", Algorithm::EdDSA, EncodingKey::from_ed_pem(&key_pem("ed25519-private.pem")).unwrap()),
    ];
    for (name, alg, key) in &cases {
        let server = asymmetric_server(&format!("{name}-public.pem"), *alg).await;
        let token = sign(&claims(json!({})), *alg, key);
        let response = server
            .client
            .post(server.url("/topics/k/events"))
            .bearer_auth(&token)
            .json(&json!({"data": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{name}: {}", response.text().await.unwrap());
        let mut sse = Sse::open(server.client.get(server.url("/topics/k/events")).bearer_auth(&token)).await;
        let id = server_publish_with(&server, &token, "k", name).await;
        assert_eq!(sse.next().await.id, id);
        // Another family's key, and the HS256 secret, are refused.
        for (other_name, other_alg, other_key) in &cases {
            if other_name != name {
                let token = sign(&claims(json!({})), *other_alg, other_key);
                let response =
                    server.client.get(server.url("/topics/k/events")).bearer_auth(&token).send().await.unwrap();
                expect_invalid_token(response).await;
            }
        }
        let hs = sign_hs256(&claims(json!({})), SECRET);
        expect_invalid_token(server.client.get(server.url("/topics/k/events")).bearer_auth(&hs).send().await.unwrap())
            .await;
    }
}

async fn server_publish_with(server: &TestServer, token: &str, topic: &str, data: &str) -> String {
    let response = server
        .client
        .post(server.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token)
        .json(&json!({"data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused_by_an_rs256_server() {
    for (public, alg) in [
        ("rsa-public.pem", Algorithm::RS256),
        ("ec-public.pem", Algorithm::ES256),
        ("ed25519-public.pem", Algorithm::EdDSA),
    ] {
        let server = asymmetric_server(public, alg).await;
        let pem = String::from_utf8(key_pem(public)).unwrap();
        for secret in [pem.as_str(), pem.trim()] {
            let confused = sign_hs256(&claims(json!({})), secret);
            let response = server
                .client
                .post(server.url("/topics/k/events"))
                .bearer_auth(&confused)
                .json(&json!({"data": "x"}))
                .send()
                .await
                .unwrap();
            let message = expect_invalid_token(response).await;
            assert!(message.contains("not signed with"), "{public}: {message}");
        }
    }
}
