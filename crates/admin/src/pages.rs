//! The dashboard's pages, rendered from snapshots with askama.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};
use herald_core::{ConnectionSnapshot, TopicPattern, now_ms};

use crate::{
    Admin, VERSION,
    auth::Operator,
    exposition::{MetricRow, parse_exposition},
    live::{Sample, TopicRow},
};

/// What every page shows in its frame (the base template reads `frame.*`).
pub(crate) struct Frame {
    nav: &'static str,
    /// Whether to link to `/inspector` (served on this listener).
    inspector: bool,
    version: &'static str,
    store: String,
    store_healthy: bool,
    /// The node's id, with a shared store.
    node: Option<String>,
    /// How a shared store keeps acknowledged events, when not on disk
    /// before the ack (a warning in the header).
    weak_durability: Option<&'static str>,
    started_ms: u64,
    uptime: String,
}

impl Frame {
    fn new(admin: &Admin, nav: &'static str) -> Self {
        let hub = admin.source.hub();
        let started_ms = admin.source.started_ms();
        let cluster = admin.source.cluster();
        Self {
            nav,
            inspector: admin.options.inspector,
            version: VERSION,
            store: hub.store().describe(),
            store_healthy: hub.store_healthy(),
            node: cluster.as_ref().map(|c| c.node.clone()),
            weak_durability: cluster.map(|c| c.durability).filter(|d| *d != "fsync"),
            started_ms,
            uptime: uptime(now_ms().saturating_sub(started_ms) / 1000),
        }
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`.
pub(crate) fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |ms| if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.0} ms") })
}

#[derive(Template)]
#[template(path = "overview.html")]
pub(crate) struct OverviewPage {
    frame: Frame,
    sample: Sample,
    p50: String,
    p99: String,
    topics: Vec<TopicRow>,
    topics_total: usize,
}

#[derive(Template)]
#[template(path = "topic.html")]
pub(crate) struct TopicPage {
    frame: Frame,
    name: String,
    subscribers: usize,
    retained: u64,
    buffered: usize,
    last_id: String,
    connections: Vec<ConnectionSnapshot>,
    connections_total: usize,
}

#[derive(Template)]
#[template(path = "connections.html")]
pub(crate) struct ConnectionsPage {
    frame: Frame,
    connections: Vec<ConnectionSnapshot>,
    connections_total: usize,
}

#[derive(Template)]
#[template(path = "metrics.html")]
pub(crate) struct MetricsPage {
    frame: Frame,
    rows: Vec<MetricRow>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage<'a> {
    why: &'a str,
}

/// The login page, saying why it is shown.
pub(crate) fn login_page(why: &str) -> String {
    LoginPage { why }.render().unwrap_or_else(|e| format!("sign-in page failed to render: {e}"))
}

fn html(rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(page) => Html(page).into_response(),
        Err(error) => {
            tracing::error!(%error, "dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; see the server log").into_response()
        }
    }
}

/// `GET /admin`.
pub(crate) async fn overview(State(admin): State<Admin>, _operator: Operator) -> Response {
    let frame = Frame::new(&admin, "overview");
    let latest = admin.live.latest();
    html(
        OverviewPage {
            frame,
            p50: millis(latest.sample.p50_ms),
            p99: millis(latest.sample.p99_ms),
            sample: latest.sample.clone(),
            topics: latest.topics.clone(),
            topics_total: latest.topics_total,
        }
        .render(),
    )
}

/// `GET /admin/topics/{topic}`.
pub(crate) async fn topic(State(admin): State<Admin>, _operator: Operator, Path(name): Path<String>) -> Response {
    let Ok(topic) = name.parse::<herald_core::TopicName>() else {
        return (StatusCode::BAD_REQUEST, "not a topic name").into_response();
    };
    let frame = Frame::new(&admin, "topic");
    let stats = match admin.source.hub().topic(&topic).await {
        Ok(stats) => stats,
        Err(error) => {
            tracing::warn!(%error, "dashboard: the store could not be read");
            admin.source.hub().topic_stats(topic.as_str())
        }
    };
    let mut connections: Vec<ConnectionSnapshot> = admin
        .source
        .connections()
        .into_iter()
        .filter(|c| c.topics.iter().any(|t| t.parse::<TopicPattern>().is_ok_and(|p| p.matches(topic.as_str()))))
        .collect();
    let connections_total = connections.len();
    connections.truncate(admin.options.rows);
    html(
        TopicPage {
            frame,
            subscribers: stats.as_ref().map_or(0, |s| s.subscribers),
            retained: stats.as_ref().map_or(0, |s| s.retained),
            buffered: stats.as_ref().map_or(0, |s| s.buffered),
            last_id: stats.and_then(|s| s.last_id).map_or_else(|| "–".into(), |id| id.to_string()),
            name: topic.to_string(),
            connections,
            connections_total,
        }
        .render(),
    )
}

/// `GET /admin/connections`.
pub(crate) async fn connections(State(admin): State<Admin>, _operator: Operator) -> Response {
    let (connections_total, connections) = admin.source.oldest_connections(admin.options.rows);
    html(ConnectionsPage { frame: Frame::new(&admin, "connections"), connections, connections_total }.render())
}

/// `GET /admin/metrics`: the exposition as a table.
pub(crate) async fn metrics(State(admin): State<Admin>, _operator: Operator) -> Response {
    let rows = parse_exposition(&admin.source.metrics_text());
    html(MetricsPage { frame: Frame::new(&admin, "metrics"), rows }.render())
}

/// `POST /admin/connections/{id}/disconnect`. The page asks for confirmation
/// and sends `X-Herald-Confirm: disconnect`, which a cross-site form cannot.
pub(crate) async fn disconnect(
    State(admin): State<Admin>,
    Operator(grants): Operator,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    if headers.get("x-herald-confirm").and_then(|v| v.to_str().ok()) != Some("disconnect") {
        return (StatusCode::BAD_REQUEST, "confirm with the header X-Herald-Confirm: disconnect").into_response();
    }
    let subject = grants.subject.as_deref().unwrap_or("-");
    if admin.source.disconnect(id) {
        tracing::warn!(stream = id, by = subject, "operator disconnected a stream");
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such stream; it may have closed already").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(nav: &'static str, store: &str, store_healthy: bool, up: u64) -> Frame {
        Frame {
            nav,
            inspector: true,
            version: VERSION,
            store: store.into(),
            store_healthy,
            node: None,
            weak_durability: None,
            started_ms: 0,
            uptime: uptime(up),
        }
    }

    fn connection() -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: 7,
            remote: "127.0.0.1".into(),
            user_agent: "<script>alert(1)</script>".into(),
            subject: Some("alice".into()),
            topics: vec!["orders.*".into()],
            connected_ms: 1,
            events_sent: 42,
            lag: 3,
        }
    }

    #[test]
    fn pages_render_their_data_and_escape_it() {
        let page = ConnectionsPage {
            frame: frame("connections", "memory", true, 65),
            connections: vec![connection()],
            connections_total: 1,
        }
        .render()
        .unwrap();
        assert!(page.contains("alice") && page.contains("orders.*") && page.contains("data-disconnect=\"7\""));
        assert!(page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"), "user agent is escaped");
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("1m 5s"));
        assert!(page.contains("id=\"c-more\" hidden"), "nothing cut, no notice: {page}");
        let cut = ConnectionsPage {
            frame: frame("connections", "memory", true, 65),
            connections: vec![connection()],
            connections_total: 501,
        }
        .render()
        .unwrap();
        assert!(cut.contains("id=\"c-count\">501<") && cut.contains("showing 1 of 501 streams"), "{cut}");
        assert!(!cut.contains("id=\"c-more\" hidden"), "{cut}");

        let sample = Sample { streams: 5, publish_rate: 12.4, ..Sample::default() };
        let topics = vec![TopicRow {
            name: "news".into(),
            subscribers: 5,
            retained: 9,
            buffered: 9,
            last_event_ms: Some(1),
            publish_rate: 2.0,
        }];
        let page = OverviewPage {
            frame: frame("overview", "sqlite:/x", false, 7200),
            sample,
            p50: millis(Some(1.234)),
            p99: millis(None),
            topics,
            topics_total: 1,
        }
        .render()
        .unwrap();
        assert!(page.contains("id=\"m-streams\">5<") && page.contains("href=\"/admin/topics/news\""));
        assert!(page.contains("store failing") && page.contains("1.23 ms") && page.contains("2h 0m"));
    }

    #[test]
    fn the_login_page_says_why() {
        let page = login_page("the token has expired");
        assert!(page.contains("the token has expired") && page.contains("action=\"/admin/login\""));
    }
}
