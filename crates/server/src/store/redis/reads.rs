//! The reads' connection: one multiplexed connection, dropped after any
//! failure that is not Redis's own error reply, and made again by the next
//! read.
//!
//! Not redis-rs's `ConnectionManager`: it reconnects only when the socket
//! reports the connection closed, so after a partition that drops packets
//! (no reset) every read, and the feed's idle check, timed out on the dead
//! connection for as long as the kernel kept it (many minutes).

use std::sync::Arc;

use futures_util::FutureExt as _;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value, aio::MultiplexedConnection};

use super::RedisSettings;

/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct Reads {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    timeout: std::time::Duration,
    current: Arc<parking_lot::Mutex<Option<MultiplexedConnection>>>,
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads").field("connected", &self.current.lock().is_some()).finish()
    }
}

impl Reads {
    /// Connects, within the timeout.
    pub(crate) async fn connect(client: redis::Client, settings: &RedisSettings) -> RedisResult<Self> {
        let config = super::connection_config(settings);
        let reads =
            Self { client, config, timeout: settings.timeout, current: Arc::new(parking_lot::Mutex::new(None)) };
        reads.connection().await?;
        Ok(reads)
    }

    /// The current connection, or a new one.
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.current.lock().clone() {
            return Ok(connection);
        }
        let connecting = self.client.get_multiplexed_async_connection_with_config(&self.config);
        let connection = super::within(self.timeout, connecting).await?;
        *self.current.lock() = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection after a failure of its own (a timeout, a reset):
    /// an error reply from Redis says nothing against it.
    fn check<T>(&self, result: &RedisResult<T>) {
        if let Err(error) = result
            && error.code().is_none()
        {
            *self.current.lock() = None;
        }
    }
}

impl redis::aio::ConnectionLike for Reads {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let result = match self.connection().await {
                Ok(mut connection) => connection.req_packed_command(cmd).await,
                Err(error) => Err(error),
            };
            self.check(&result);
            result
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let result = match self.connection().await {
                Ok(mut connection) => connection.req_packed_commands(pipeline, offset, count).await,
                Err(error) => Err(error),
            };
            self.check(&result);
            result
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        0
    }
}
