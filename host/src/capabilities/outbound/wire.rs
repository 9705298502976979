//! The wire: sending a vetted request to the addresses that were checked,
//! over plain TCP or TLS, and the response body with its between-bytes
//! timeout.
//!
//! This is `wasmtime_wasi_http::default_send_request` with one change that
//! is the reason it exists: it connects to the vetted addresses instead of
//! looking the host name up again (see [`send_to`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::Target;

/// What the guest sees when a name does not resolve (as wasmtime-wasi-http
/// reports a failed lookup).
pub(super) fn not_found() -> HttpError {
    HttpError::DnsError {
        rcode: Some("address not available".into()),
        info_code: None,
    }
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// The TLS settings: the webpki roots and the ring provider, as
/// wasmtime-wasi-http's default uses; built once per process.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        // The provider is named, not taken from the process default, which
        // depends on which rustls features the whole build happens to have.
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
    });
    config
        .clone()
        .map_err(|e| HttpError::InternalError(Some(format!("TLS configuration: {e}"))))
}

/// Connects to the first of `addrs` that answers, each attempt bounded by
/// the connect timeout; the last failure if none does.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(HttpError::Connect(e)),
            Err(_) => last = Some(HttpError::ConnectionTimeout),
        }
    }
    Err(last.unwrap_or(HttpError::ConnectionTimeout))
}

/// Sends `request` over a connection to one of the vetted `addrs`: what
/// `wasmtime_wasi_http::default_send_request` does, except that it connects
/// to these addresses instead of looking the name up again (which a DNS
/// answer changed in between would turn to 127.0.0.1). TLS still verifies
/// the certificate against the host name, which is also the SNI.
pub(super) async fn send_to(
    mut request: http::Request<WasiBody>,
    target: &Target,
    addrs: &[SocketAddr],
    options: RequestOptions,
) -> Result<SendOk, HttpError> {
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    // Tokio panics on a zero interval; 1 ns is as good as zero.
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));

    let tcp = connect(addrs, connect_timeout).await?;
    let stream: Box<dyn Stream> = if target.scheme == "https" {
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request carries scheme and authority; on the wire (not to a
    // proxy) only the path and query go, and `Host` is already a header.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let send = async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, HttpError>(response.map(|incoming| ResponseBody { incoming, timeout }))
    };
    // Drive the connection while waiting for the response head; once it is
    // here, the connection's future goes to wasmtime-wasi-http, which
    // drives it while the guest reads the body.
    let mut send = std::pin::pin!(send);
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = send.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let Some(c) = conn.as_mut() else {
            return Poll::Pending;
        };
        let done = ready!(Pin::new(c).poll(cx));
        conn = None;
        match done {
            Ok(()) => send.as_mut().poll(cx),
            Err(e) => Poll::Ready(Err(HttpError::from(e))),
        }
    })
    .await?;
    let io = async move {
        match conn {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|e| {
                if e.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::from(e)
                }
            }),
        }
    };
    Ok((
        response.map(BodyExt::boxed_unsync),
        Box::new(io) as Box<dyn Future<Output = _> + Send>,
    ))
}

/// What a sent request gives wasmtime-wasi-http: the response, and the
/// connection's I/O to drive while its body is read.
pub(super) type SendOk = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// The response body, failing if the upstream pauses longer than the
/// between-bytes timeout (as wasmtime-wasi-http's own body does).
struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap())
    }

    fn get(url: &str) -> http::Request<WasiBody> {
        http::Request::get(url)
            .header(http::header::HOST, "example.invalid")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    /// A loopback listener that accepts one connection and hands back what
    /// the client sent first, after answering `reply`.
    async fn one_shot(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            buf.truncate(n);
            let _ = conn.write_all(reply).await;
            buf
        });
        (addr, task)
    }

    #[tokio::test]
    async fn connects_to_the_vetted_address_without_looking_the_name_up_again() {
        // The host name does not resolve at all: the request can only have
        // gone to the address it was given.
        let (addr, seen) =
            one_shot(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi").await;
        let url = format!("http://example.invalid:{}/path?q=1", addr.port());
        let (response, io) = send_to(get(&url), &target(&url), &[addr], RequestOptions::default())
            .await
            .expect("sent");
        tokio::spawn(Box::into_pin(io));
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hi");
        let head = String::from_utf8(seen.await.unwrap()).unwrap();
        // Origin form on the wire, the name in `Host`.
        assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_lowercase().contains("host: example.invalid"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn tls_to_a_vetted_address_names_the_host() {
        // The TLS client hello goes to the vetted address and carries the
        // host name (SNI), which the certificate is checked against.
        let (addr, seen) = one_shot(b"").await;
        let url = format!("https://api.example.invalid:{}/", addr.port());
        let result = send_to(get(&url), &target(&url), &[addr], RequestOptions::default()).await;
        assert!(result.is_err(), "no TLS server there");
        let hello = seen.await.unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(19).any(|w| w == b"api.example.invalid"),
            "no SNI in {hello:?}"
        );
    }
}
