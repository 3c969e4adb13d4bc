//! Publishers: K keep-alive HTTP/1.1 connections (plain, or TLS for an
//! `https://` publish URL), each sending one request at a time and reading
//! the whole answer before the next.

use std::{
    fmt::Write as _,
    io,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    connect::{Dialer, HttpConnection},
    http::{self, BodyDecoder},
    payload::{self, Payload},
    run::{BodyFormat, Shared, new_histogram},
    tls::Alpn,
    url::{Target, UrlTemplate},
};

/// What every publisher sends, shared.
#[derive(Debug)]
pub struct PublishPlan {
    /// Single-event URL (`{i}` = topic index), or the batch URL.
    pub url: UrlTemplate,
    /// Events in the run.
    pub events: u64,
    /// Events per request: 1, or a batch size (JSON array bodies).
    pub batch: usize,
    /// Topic name of batch items (`{i}` = topic index).
    pub batch_topic: String,
    /// Topics events are spread over (event `seq` goes to `seq % topics`).
    pub topics: usize,
    /// Events per second over all publishers; 0 = as fast as acks come.
    pub rate: f64,
    /// Body format of single-event publishes.
    pub body: BodyFormat,
    /// Payload text size.
    pub payload_size: usize,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    /// Opens the connections (with the TLS client, for `https://`).
    pub dialer: Dialer,
}

impl PublishPlan {
    /// Requests in the run.
    pub fn requests(&self) -> u64 {
        self.events.div_ceil(self.batch.max(1) as u64)
    }
}

/// One publisher's account.
#[derive(Debug)]
pub struct PublisherResult {
    /// Per-request latency, µs (acknowledged requests only).
    pub latency: Histogram<u64>,
    /// Requests answered 2xx.
    pub ok_requests: u64,
    /// Requests that failed (non-2xx or I/O), with the first few reasons.
    pub failed_requests: u64,
    /// Distinct failure reasons seen, with counts.
    pub failures: Vec<(String, u64)>,
    /// Connections opened.
    pub connections: u64,
}

/// Sends requests until the plan is done or the run is cancelled.
pub async fn run(plan: Arc<PublishPlan>, shared: Arc<Shared>, start: Instant) -> PublisherResult {
    let mut result = PublisherResult {
        latency: new_histogram(),
        ok_requests: 0,
        failed_requests: 0,
        failures: Vec::new(),
        connections: 0,
    };
    let mut conn = Connection::new(plan.url.expand(0));
    let mut body = String::new();
    let mut request = Vec::new();
    let requests = plan.requests();
    let batch = plan.batch.max(1) as u64;
    loop {
        let unit = shared.next_request.fetch_add(1, Ordering::Relaxed);
        if unit >= requests || shared.cancel.is_cancelled() {
            break;
        }
        if plan.rate > 0.0 {
            let at = start + Duration::from_secs_f64((unit * batch) as f64 / plan.rate);
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => break,
                () = tokio::time::sleep_until(at.into()) => {}
            }
        }
        let first = unit * batch;
        let count = batch.min(plan.events - first);
        let target = build(&plan, &shared, first, count, &mut body, &mut request);
        if target.addr != conn.target.addr {
            conn = Connection::new(target);
        }
        let sent = Instant::now();
        let answer = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => break,
            answer = conn.send(&plan.dialer, &request, &mut result.connections) => answer,
        };
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                result.latency.saturating_record(micros.max(1));
                result.ok_requests += 1;
                shared.acked_events.fetch_add(count, Ordering::Relaxed);
                shared.last_ack_us.fetch_max(shared.now_us(), Ordering::Relaxed);
            }
            Ok(status) => fail(&mut result, format!("status {status}")),
            Err(error) => fail(&mut result, format!("{error:#}")),
        }
        shared.finished_requests.fetch_add(1, Ordering::Relaxed);
    }
    result
}

fn fail(result: &mut PublisherResult, reason: String) {
    result.failed_requests += 1;
    if let Some((_, n)) = result.failures.iter_mut().find(|(r, _)| *r == reason) {
        *n += 1;
    } else if result.failures.len() < 8 {
        result.failures.push((reason, 1));
    }
}

/// Writes the request for events `first..first + count` into `request`.
fn build(
    plan: &PublishPlan,
    shared: &Shared,
    first: u64,
    count: u64,
    body: &mut String,
    request: &mut Vec<u8>,
) -> Target {
    body.clear();
    let topics = plan.topics.max(1) as u64;
    let sent_us = shared.now_us();
    let payload = |seq| Payload { nonce: shared.nonce, seq, sent_us };
    let (target, content_type) = if plan.batch > 0 {
        body.push('[');
        for seq in first..first + count {
            if seq > first {
                body.push(',');
            }
            let topic = plan.batch_topic.replace(crate::url::PLACEHOLDER, &(seq % topics).to_string());
            body.push_str("{\"topic\":");
            body.push_str(&serde_json::Value::String(topic).to_string());
            body.push_str(",\"data\":\"");
            payload::encode(body, payload(seq), plan.payload_size);
            body.push_str("\"}");
        }
        body.push(']');
        (plan.url.expand(0), "application/json")
    } else {
        let target = plan.url.expand((first % topics) as usize);
        match plan.body {
            BodyFormat::Json => {
                body.push_str("{\"data\":\"");
                payload::encode(body, payload(first), plan.payload_size);
                body.push_str("\"}");
                (target, "application/json")
            }
            BodyFormat::Text => {
                payload::encode(body, payload(first), plan.payload_size);
                (target, "text/plain")
            }
            BodyFormat::Form => {
                let topic = plan.batch_topic.replace(crate::url::PLACEHOLDER, &(first % topics).to_string());
                body.push_str("topic=");
                body.extend(form_urlencoded::byte_serialize(topic.as_bytes()));
                body.push_str("&data=");
                // The payload is letters, digits and spaces: a space is `+` in a form.
                let start = body.len();
                payload::encode(body, payload(first), plan.payload_size);
                let encoded = body[start..].replace(' ', "+");
                body.truncate(start);
                body.push_str(&encoded);
                (target, "application/x-www-form-urlencoded")
            }
            BodyFormat::Pushpin => {
                let channel = plan.batch_topic.replace(crate::url::PLACEHOLDER, &(first % topics).to_string());
                pushpin_item(body, &channel, payload(first), plan.payload_size);
                (target, "application/json")
            }
        }
    };
    request.clear();
    request.extend_from_slice(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
            target.path,
            target.host_header,
            body.len(),
            plan.headers
        )
        .as_bytes(),
    );
    request.extend_from_slice(body.as_bytes());
    target
}

/// Appends Pushpin's publish body for one event: an item on `channel` whose
/// `http-stream` content, written to every stream as is, is a whole SSE
/// frame with the sequence number as its id (unique in the run).
fn pushpin_item(body: &mut String, channel: &str, payload: Payload, payload_size: usize) {
    body.push_str("{\"items\":[{\"channel\":");
    body.push_str(&serde_json::Value::String(channel.to_owned()).to_string());
    let _ = write!(body, ",\"formats\":{{\"http-stream\":{{\"content\":\"id: {}\\ndata: ", payload.seq);
    // The payload is letters, digits and spaces: nothing to escape in JSON.
    payload::encode(body, payload, payload_size);
    body.push_str("\\n\\n\"}}}]}");
}

/// One keep-alive connection.
struct Connection {
    target: Target,
    stream: Option<HttpConnection>,
    buf: Vec<u8>,
    /// Requests answered on the current stream.
    requests: u64,
}

impl Connection {
    fn new(target: Target) -> Self {
        Self { target, stream: None, buf: Vec::with_capacity(4096), requests: 0 }
    }

    /// Sends `request` and reads the answer; the status code. A request that
    /// got no byte of answer on a reused connection (the server closed it
    /// while idle) is sent once more on a fresh one.
    async fn send(&mut self, dialer: &Dialer, request: &[u8], connections: &mut u64) -> anyhow::Result<u16> {
        let reused = self.stream.is_some() && self.requests > 0;
        match self.try_send(dialer, request, connections).await {
            Err(SendError::NoAnswer(_)) if reused => {
                self.stream = None;
                self.try_send(dialer, request, connections).await.map_err(SendError::into_anyhow)
            }
            other => other.map_err(SendError::into_anyhow),
        }
    }

    async fn try_send(&mut self, dialer: &Dialer, request: &[u8], connections: &mut u64) -> Result<u16, SendError> {
        if self.stream.is_none() {
            let stream = dialer.dial(&self.target, Alpn::Http1).await.map_err(SendError::Other)?;
            *connections += 1;
            self.stream = Some(stream);
            self.requests = 0;
            self.buf.clear();
        }
        let result = self.exchange(request).await;
        match &result {
            Ok((_, close)) if !close => self.requests += 1,
            _ => self.stream = None,
        }
        result.map(|(status, _)| status)
    }

    /// One request and its response: (status, whether the connection closes).
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), SendError> {
        let Some(stream) = self.stream.as_mut() else { return Err(SendError::Other(anyhow::anyhow!("no connection"))) };
        stream.write_all(request).await.map_err(|e| SendError::NoAnswer(e.into()))?;
        let mut got_bytes = !self.buf.is_empty();
        let mut chunk = [0u8; 4096];
        let (head, head_len) = loop {
            if let Some(parsed) = http::parse_head(&self.buf).map_err(SendError::Other)? {
                break parsed;
            }
            let n = stream.read(&mut chunk).await.map_err(|e| answer_error(got_bytes, e))?;
            if n == 0 {
                return Err(answer_error(got_bytes, io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            got_bytes = true;
            self.buf.extend_from_slice(&chunk[..n]);
        };
        self.buf.drain(..head_len);
        let mut decoder = BodyDecoder::new(head.framing);
        let used = decoder.feed(&self.buf, &mut |_| {}).map_err(SendError::Other)?;
        self.buf.drain(..used);
        while !decoder.is_done() {
            let n = stream.read(&mut chunk).await.map_err(|e| SendError::Other(e.into()))?;
            if n == 0 {
                if matches!(decoder, BodyDecoder::UntilClose) {
                    return Ok((head.status, true));
                }
                return Err(SendError::Other(anyhow::anyhow!("the connection closed mid-response")));
            }
            let used = decoder.feed(&chunk[..n], &mut |_| {}).map_err(SendError::Other)?;
            self.buf.extend_from_slice(&chunk[used..n]);
        }
        Ok((head.status, head.close))
    }
}

enum SendError {
    /// Nothing of an answer arrived: safe to send again on a fresh connection.
    NoAnswer(anyhow::Error),
    Other(anyhow::Error),
}

impl SendError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            Self::NoAnswer(e) | Self::Other(e) => e,
        }
    }
}

fn answer_error(got_bytes: bool, error: io::Error) -> SendError {
    if got_bytes { SendError::Other(error.into()) } else { SendError::NoAnswer(error.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;

    #[test]
    fn a_pushpin_item_carries_one_sse_frame() {
        let sent = Payload { nonce: 0xabc, seq: 41, sent_us: 7_000 };
        let mut body = String::new();
        pushpin_item(&mut body, "bench", sent, 100);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let item = &json["items"][0];
        assert_eq!(item["channel"], "bench");
        assert_eq!(json["items"].as_array().map(Vec::len), Some(1));
        let content = item["formats"]["http-stream"]["content"].as_str().unwrap();
        let mut events = Vec::new();
        SseParser::default()
            .feed(content.as_bytes(), &mut |e| events.push((e.id.map(<[u8]>::to_vec), payload::parse(e.data))))
            .unwrap();
        assert_eq!(events, vec![(Some(b"41".to_vec()), Some(sent))]);
    }
}
