//! The server's defaults, as documented constants. The hub's and the store's
//! (rings, topics, delivery, retention) are `herald-core`'s own defaults:
//! `RingLimits`, `HubConfig` and `Retention`. `--help` shows them all, read
//! from here and there by the settings' definition.

use std::time::Duration;

/// Where Herald listens.
pub const LISTEN: &str = "127.0.0.1:8080";
/// Where Herald keeps its data.
pub const DATA_DIR: &str = "./herald-data";
/// Comment line sent on idle streams, so proxies keep them open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to clients (`retry:`).
pub const RETRY: Duration = Duration::from_secs(3);
/// Leeway for `exp` and `nbf`, for clock skew.
pub const JWT_LEEWAY: Duration = Duration::from_secs(5);
/// Open TCP connections, all clients together.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Open event streams per client IP address.
pub const MAX_STREAMS_PER_IP: usize = 256;
/// Requests open at once on one HTTP/2 connection (hyper's default).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 200;
/// Request body size.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// One event's data size.
pub const MAX_EVENT_BYTES: usize = 256 << 10;
/// Topics and patterns in one subscription.
pub const MAX_TOPICS_PER_SUBSCRIPTION: usize = 64;
/// Events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Time a client has to send a complete request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's whole body, from the end of its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in flight is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A stream whose client stops reading for this long is disconnected.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest stream; zero for no limit.
pub const STREAM_MAX_DURATION: Duration = Duration::ZERO;
/// Time given to in-flight work at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Rows the dashboard lists per table (topics, streams).
pub const DASHBOARD_ROWS: usize = 500;
/// Log filter.
pub const LOG: &str = "info";
/// Prefix of Herald's keys in Redis.
pub const REDIS_PREFIX: &str = "herald";
/// Bound of each Redis command and connection attempt.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the Redis feed may lag before it is dropped and repaired.
pub const REDIS_FEED_MAX_LAG: Duration = Duration::from_secs(5);
