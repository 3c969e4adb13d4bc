//! Events published on one node reach every node, with the same ids and
//! bytes, in order; a client resumes exactly on any node.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_node_reaches_subscribers_of_every_node_with_the_same_id() {
    let cluster = Cluster::start(3, Persistence::Always, &[]);
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push(subscribe(node, "/topics/news/events", None).await);
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = publish(&cluster.nodes[i % 3], "news", &format!("line {i}\nsecond"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    for stream in &mut streams {
        let events = take(stream, 20, WAIT).await;
        let got: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, ids, "every node delivers every event once, in id order");
        assert!(events.iter().enumerate().all(|(i, e)| e.data == format!("line {i}\nsecond")));
    }
}
