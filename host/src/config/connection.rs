//! Bounds on a listener's connections.

use std::time::Duration;

/// Bounds on one listener's connections. The data plane and the admin API
/// each have their own, so that a flood of one cannot lock operators out of
/// the other.
///
/// A connection that is slow or silent costs a file descriptor and buffers
/// for as long as it stays open: every phase of it is bounded in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request head, from the moment
    /// the server waits for it (a new connection, or the first byte of the
    /// next request on a kept-alive one). Past it the connection is closed.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may stay open with no request in
    /// flight and no byte of a new one. Past it the connection is closed.
    pub idle_timeout: Duration,
    /// Connections open at once on the listener. Past it, the connection
    /// that has waited longest for a request is closed to make room; when
    /// every connection has a request in flight, the new one is refused
    /// (closed at once) rather than running the host out of descriptors.
    pub max_connections: u32,
    /// Largest request head (request line and headers), in bytes; larger
    /// answers 431 and closes the connection (HTTP/2: the header list).
    pub max_header_bytes: u32,
    /// Most header fields in one request; more answers 431 (HTTP/1.1).
    pub max_headers: u32,
    /// How long a request body may take before [`Self::body_min_rate`]
    /// applies. A body that has not arrived by then, and keeps arriving
    /// slower than the minimum rate, fails (408, connection closed), so a
    /// slow client cannot hold an invocation slot for longer than that.
    pub body_timeout: Duration,
    /// Least average rate, in bytes per second, at which a request body
    /// must arrive once it has taken longer than [`Self::body_timeout`].
    pub body_min_rate: u64,
}

impl ConnectionLimits {
    /// The data plane's defaults: many clients, bounded per phase.
    pub const DATA_DEFAULT: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 10_000,
        max_header_bytes: 32 << 10,
        max_headers: 100,
        body_timeout: Duration::from_secs(10),
        body_min_rate: 1 << 10,
    };

    /// The admin API's defaults: few clients (operators, the CLI).
    pub const ADMIN_DEFAULT: ConnectionLimits = ConnectionLimits {
        max_connections: 256,
        ..ConnectionLimits::DATA_DEFAULT
    };

    /// Checks the values; `which` names the listener in the message.
    pub fn validate(&self, which: &str) -> Result<(), String> {
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(format!(
                "the {which} header and idle timeouts must be more than 0"
            ));
        }
        if self.body_timeout.is_zero() {
            return Err(format!("the {which} body timeout must be more than 0"));
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err(format!(
                "the {which} connection limit must be between 1 and 1000000"
            ));
        }
        if !(8 << 10..=1 << 20).contains(&self.max_header_bytes) {
            return Err(format!(
                "the {which} header size limit must be between 8KiB and 1MiB"
            ));
        }
        if !(8..=10_000).contains(&self.max_headers) {
            return Err(format!(
                "the {which} header count limit must be between 8 and 10000"
            ));
        }
        Ok(())
    }
}
