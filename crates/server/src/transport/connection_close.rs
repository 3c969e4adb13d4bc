//! Why a connection closed, for `herald_connections_closed_total{reason}`.
//! The labels are public (dashboards and alerts read them): change none.

/// Why a TCP connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectionClose {
    /// The client closed it.
    ClientGone,
    /// No request for `--idle-timeout`.
    Idle,
    /// The client stopped reading for `--stall-timeout`.
    Lagged,
    /// The server is shutting down.
    Shutdown,
    /// A protocol or socket error, or a request head not whole in time.
    Error,
    /// An event stream, or its error answer, ended and the server closed the
    /// connection (the hand-written stream path serves one request).
    StreamEnded,
}

impl ConnectionClose {
    fn label(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Idle => "idle",
            Self::Lagged => "lagged",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
            Self::StreamEnded => "stream_ended",
        }
    }

    /// Counts the close.
    pub(super) fn record(self) {
        metrics::counter!("herald_connections_closed_total", "reason" => self.label()).increment(1);
    }
}
