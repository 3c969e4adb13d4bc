//! The update form, byte for byte: what a publisher sends is what
//! subscribers get, or a clear refusal; never characters replaced.

use super::*;

#[tokio::test]
async fn form_fields_decode_exactly_and_invalid_utf8_is_refused() {
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let mut stream = subscribe(&server, "?topic=f", None).await;
    let post = |body: &'static str| server.client.post(door_url(&server, "")).bearer_auth(publisher()).body(body);
    let response = post("topic=f&data=a+b%2Bc%20%C3%A9+100%25&id=x%26y").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "x&y");
    let event = stream.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), ("x&y", "a b+c é 100%"));

    for bad in ["topic=f&data=%C3", "topic=%FF&data=x", "topic=f&id=%80"] {
        expect_error(post(bad).send().await.unwrap(), StatusCode::BAD_REQUEST, "invalid_utf8").await;
    }
    let last = publish(&server, &[("topic", "f"), ("data", "after")]).await;
    assert_eq!(stream.next().await.id, last, "nothing was published by the refused forms");
}
