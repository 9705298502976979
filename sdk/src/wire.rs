//! What the WASI 0.2 glue (`wasi_http`) and the WASI 0.3 glue
//! (`wasi_http_p3`) share: when a request has no body to read, the header
//! section of a response, header maps, methods and error-code names. The
//! `wasi:http` types of both versions have the same variants, so each
//! function here is written once against [`crate::wasi`], whichever version
//! this build targets.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::wasi::http::types::{self as wasi, ErrorCode, Fields};

/// How much to ask for per read of a body. The host hands out what it has
/// (usually less); larger reads only mean fewer calls.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) const READ_SIZE: usize = 64 * 1024;

/// Upper bound on the capacity reserved up front from a `content-length`, so
/// a lying header cannot make the guest reserve memory it never fills.
const MAX_PREALLOCATE: usize = 16 * 1024 * 1024;

/// What reading a request's body takes, decided from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// There is none to read.
    None,
    /// Read it, reserving this many bytes first.
    Read { capacity: usize },
}

impl RequestBody {
    /// HTTP/1.1: a request with neither `content-length` nor
    /// `transfer-encoding` has no body (RFC 9112, 6.3), nor has one with
    /// `content-length: 0`. Not reading it saves the host a body stream and
    /// a round trip through its executor on every GET. (HTTP/2 may send a
    /// body without either header, so only methods that normally carry none
    /// are taken at their word.)
    pub(crate) fn of(method: &Method, headers: &HeaderMap) -> RequestBody {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let no_body_method = matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        );
        let bodiless = length == Some(0)
            || (no_body_method
                && length.is_none()
                && !headers.contains_key(http::header::TRANSFER_ENCODING));
        if bodiless {
            RequestBody::None
        } else {
            RequestBody::Read {
                capacity: length.map_or(0, |len| len.min(MAX_PREALLOCATE)),
            }
        }
    }
}

/// The header fields of a response with `status` and a body of `body_len`
/// bytes, as the host takes them: the handler's headers, plus a
/// `content-length` unless the handler set one or the status never has a
/// body (RFC 9110, 8.6). A known length lets the host answer without
/// chunked encoding.
pub(crate) fn response_fields(
    status: u16,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<(String, Vec<u8>)> {
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !bodiless && !headers.contains_key(http::header::CONTENT_LENGTH) {
        entries.push(("content-length".into(), body_len.to_string().into_bytes()));
    }
    entries
}

/// The response's header fields, in one host call when the host accepts all
/// of them. The host refuses hop-by-hop headers (`connection`, ...) it
/// manages itself; then each is added on its own and the refused ones are
/// dropped, which is what an HTTP proxy would do too.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn fields(entries: Vec<(String, Vec<u8>)>) -> Fields {
    if let Ok(fields) = Fields::from_list(&entries) {
        return fields;
    }
    let fields = Fields::new();
    for (name, value) in &entries {
        if let Err(e) = fields.append(name, value) {
            eprintln!("wisp-sdk: response header {name} dropped: {e:?}");
        }
    }
    fields
}

/// The host has already validated every name and value (it built them from an
/// `http::HeaderMap`), so nothing is expected to be skipped here.
pub(crate) fn header_map(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            map.append(name, value);
        }
    }
    map
}

/// The request's method; an extension method that is not a valid token
/// answers `HTTP-request-method-invalid`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn method(method: wasi::Method) -> Result<Method, ErrorCode> {
    Ok(match method {
        wasi::Method::Get => Method::GET,
        wasi::Method::Head => Method::HEAD,
        wasi::Method::Post => Method::POST,
        wasi::Method::Put => Method::PUT,
        wasi::Method::Delete => Method::DELETE,
        wasi::Method::Connect => Method::CONNECT,
        wasi::Method::Options => Method::OPTIONS,
        wasi::Method::Trace => Method::TRACE,
        wasi::Method::Patch => Method::PATCH,
        wasi::Method::Other(other) => {
            Method::from_bytes(other.as_bytes()).map_err(|_| ErrorCode::HttpRequestMethodInvalid)?
        }
    })
}

/// `method` as `wasi:http` names it (outbound requests).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn wasi_method(method: &Method) -> wasi::Method {
    match method.as_str() {
        "GET" => wasi::Method::Get,
        "HEAD" => wasi::Method::Head,
        "POST" => wasi::Method::Post,
        "PUT" => wasi::Method::Put,
        "DELETE" => wasi::Method::Delete,
        "CONNECT" => wasi::Method::Connect,
        "OPTIONS" => wasi::Method::Options,
        "TRACE" => wasi::Method::Trace,
        "PATCH" => wasi::Method::Patch,
        other => wasi::Method::Other(other.to_string()),
    }
}

/// `scheme` as `wasi:http` names it (outbound requests).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn wasi_scheme(scheme: &http::uri::Scheme) -> wasi::Scheme {
    match scheme.as_str() {
        "http" => wasi::Scheme::Http,
        "https" => wasi::Scheme::Https,
        other => wasi::Scheme::Other(other.to_string()),
    }
}

/// An `internal-error` with `message`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn internal(message: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(message.to_string()))
}

/// The WIT name of a `wasi:http` error code (`HTTP-request-denied`), and
/// its payload as text if it has one.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn error_code_name(code: &ErrorCode) -> (&'static str, Option<String>) {
    fn some<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
        v.as_ref().map(ToString::to_string)
    }
    fn field(p: &Option<wasi::FieldSizePayload>) -> Option<String> {
        p.as_ref().map(|p| {
            format!(
                "field {}, size {}",
                p.field_name.as_deref().unwrap_or("?"),
                some(&p.field_size).unwrap_or_else(|| "?".into())
            )
        })
    }
    match code {
        ErrorCode::DnsTimeout => ("DNS-timeout", None),
        ErrorCode::DnsError(p) => ("DNS-error", p.rcode.clone().or_else(|| some(&p.info_code))),
        ErrorCode::DestinationNotFound => ("destination-not-found", None),
        ErrorCode::DestinationUnavailable => ("destination-unavailable", None),
        ErrorCode::DestinationIpProhibited => ("destination-IP-prohibited", None),
        ErrorCode::DestinationIpUnroutable => ("destination-IP-unroutable", None),
        ErrorCode::ConnectionRefused => ("connection-refused", None),
        ErrorCode::ConnectionTerminated => ("connection-terminated", None),
        ErrorCode::ConnectionTimeout => ("connection-timeout", None),
        ErrorCode::ConnectionReadTimeout => ("connection-read-timeout", None),
        ErrorCode::ConnectionWriteTimeout => ("connection-write-timeout", None),
        ErrorCode::ConnectionLimitReached => ("connection-limit-reached", None),
        ErrorCode::TlsProtocolError => ("TLS-protocol-error", None),
        ErrorCode::TlsCertificateError => ("TLS-certificate-error", None),
        ErrorCode::TlsAlertReceived(p) => ("TLS-alert-received", p.alert_message.clone()),
        ErrorCode::HttpRequestDenied => ("HTTP-request-denied", None),
        ErrorCode::HttpRequestLengthRequired => ("HTTP-request-length-required", None),
        ErrorCode::HttpRequestBodySize(n) => ("HTTP-request-body-size", some(n)),
        ErrorCode::HttpRequestMethodInvalid => ("HTTP-request-method-invalid", None),
        ErrorCode::HttpRequestUriInvalid => ("HTTP-request-URI-invalid", None),
        ErrorCode::HttpRequestUriTooLong => ("HTTP-request-URI-too-long", None),
        ErrorCode::HttpRequestHeaderSectionSize(n) => ("HTTP-request-header-section-size", some(n)),
        ErrorCode::HttpRequestHeaderSize(p) => ("HTTP-request-header-size", field(p)),
        ErrorCode::HttpRequestTrailerSectionSize(n) => {
            ("HTTP-request-trailer-section-size", some(n))
        }
        ErrorCode::HttpRequestTrailerSize(p) => {
            ("HTTP-request-trailer-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseIncomplete => ("HTTP-response-incomplete", None),
        ErrorCode::HttpResponseHeaderSectionSize(n) => {
            ("HTTP-response-header-section-size", some(n))
        }
        ErrorCode::HttpResponseHeaderSize(p) => {
            ("HTTP-response-header-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseBodySize(n) => ("HTTP-response-body-size", some(n)),
        ErrorCode::HttpResponseTrailerSectionSize(n) => {
            ("HTTP-response-trailer-section-size", some(n))
        }
        ErrorCode::HttpResponseTrailerSize(p) => {
            ("HTTP-response-trailer-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseTransferCoding(s) => ("HTTP-response-transfer-coding", s.clone()),
        ErrorCode::HttpResponseContentCoding(s) => ("HTTP-response-content-coding", s.clone()),
        ErrorCode::HttpResponseTimeout => ("HTTP-response-timeout", None),
        ErrorCode::HttpUpgradeFailed => ("HTTP-upgrade-failed", None),
        ErrorCode::HttpProtocolError => ("HTTP-protocol-error", None),
        ErrorCode::LoopDetected => ("loop-detected", None),
        ErrorCode::ConfigurationError => ("configuration-error", None),
        ErrorCode::InternalError(s) => ("internal-error", s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn which_requests_have_a_body_to_read() {
        let none = HeaderMap::new();
        assert_eq!(RequestBody::of(&Method::GET, &none), RequestBody::None);
        assert_eq!(RequestBody::of(&Method::DELETE, &none), RequestBody::None);
        // A body-carrying method without a length may still send one
        // (HTTP/2): read it.
        assert_eq!(
            RequestBody::of(&Method::POST, &none),
            RequestBody::Read { capacity: 0 }
        );
        let chunked = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            RequestBody::of(&Method::GET, &chunked),
            RequestBody::Read { capacity: 0 }
        );
        let empty = headers(&[("content-length", "0")]);
        assert_eq!(RequestBody::of(&Method::POST, &empty), RequestBody::None);
        let sized = headers(&[("content-length", "5242880")]);
        assert_eq!(
            RequestBody::of(&Method::PUT, &sized),
            RequestBody::Read { capacity: 5 << 20 }
        );
        // A lying length reserves at most MAX_PREALLOCATE.
        let huge = headers(&[("content-length", "99999999999")]);
        assert_eq!(
            RequestBody::of(&Method::POST, &huge),
            RequestBody::Read {
                capacity: MAX_PREALLOCATE
            }
        );
        let garbage = headers(&[("content-length", "lots")]);
        assert_eq!(
            RequestBody::of(&Method::POST, &garbage),
            RequestBody::Read { capacity: 0 }
        );
    }

    #[test]
    fn responses_carry_their_length_unless_bodiless_or_set() {
        let h = headers(&[("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")]);
        assert_eq!(
            response_fields(200, &h, 5),
            [
                ("content-type".to_string(), b"text/plain".to_vec()),
                ("x-a".to_string(), b"1".to_vec()),
                ("x-a".to_string(), b"2".to_vec()),
                ("content-length".to_string(), b"5".to_vec()),
            ]
        );
        for status in [101, 204, 304] {
            assert!(response_fields(status, &HeaderMap::new(), 0).is_empty());
        }
        let set = headers(&[("content-length", "3")]);
        assert_eq!(
            response_fields(200, &set, 3),
            [("content-length".to_string(), b"3".to_vec())]
        );
        assert_eq!(
            response_fields(404, &HeaderMap::new(), 0),
            [("content-length".to_string(), b"0".to_vec())]
        );
    }

    #[test]
    fn header_maps_keep_repeats_and_skip_invalid_entries() {
        let map = header_map(vec![
            ("x-a".into(), b"1".to_vec()),
            ("x-a".into(), b"2".to_vec()),
            ("bad name".into(), b"v".to_vec()),
            ("x-b".into(), b"line\nbreak".to_vec()),
        ]);
        assert_eq!(map.get_all("x-a").iter().count(), 2);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn methods_both_ways() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE",
        ] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method(wasi_method(&m)).unwrap(), m);
        }
        assert!(matches!(
            method(wasi::Method::Other("bad method".into())),
            Err(ErrorCode::HttpRequestMethodInvalid)
        ));
        assert!(matches!(
            wasi_scheme(&http::uri::Scheme::HTTPS),
            wasi::Scheme::Https
        ));
    }

    #[test]
    fn error_codes_are_named_as_in_the_wit() {
        assert_eq!(
            error_code_name(&ErrorCode::HttpRequestDenied),
            ("HTTP-request-denied", None)
        );
        assert_eq!(
            error_code_name(&ErrorCode::HttpRequestBodySize(Some(7))),
            ("HTTP-request-body-size", Some("7".into()))
        );
        assert_eq!(
            error_code_name(&internal("boom")),
            ("internal-error", Some("boom".into()))
        );
    }
}
