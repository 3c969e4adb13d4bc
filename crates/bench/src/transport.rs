//! How event streams reach the server: plain HTTP/1.1, HTTPS with one
//! HTTP/1.1 stream per connection, or HTTPS with many HTTP/2 streams on
//! each connection. `run` and `idle-tls` take the same choice.

/// The transport of the subscribers' streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP/1.1 over TCP, one stream per connection (`http://` URLs).
    Plain,
    /// HTTP/1.1 over TLS, one stream per connection (`https://` URLs).
    H1,
    /// HTTP/2 over TLS, several streams per connection (`https://` URLs).
    H2,
}

impl Transport {
    /// The transport an URL's scheme implies when none is asked for.
    pub fn for_scheme(tls: bool) -> Self {
        if tls { Self::H1 } else { Self::Plain }
    }

    /// Whether it runs over TLS.
    pub fn is_tls(self) -> bool {
        self != Self::Plain
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::H1 => "h1",
            Self::H2 => "h2",
        }
    }
}
