//! CORS answered by the host (`wisp deploy --cors-origin`): a function
//! that lists origins gets its preflights answered here, without an
//! instance, and its responses marked for the origins it allows. A
//! function without CORS settings sees every `OPTIONS` request itself, as
//! before.
//!
//! - A preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) from a listed origin: 204 with
//!   `Access-Control-Allow-Origin` (the origin, or `*` when `*` is listed
//!   and credentials are not allowed), `-Allow-Methods`, `-Allow-Headers`
//!   (the requested ones echoed, up to [`MAX_REQUEST_HEADERS_LEN`] bytes),
//!   `-Max-Age`, `-Allow-Credentials` when set, and `Vary`.
//! - A preflight from any other origin: 403 `cors_origin_not_allowed`
//!   (without the allow headers, so the browser refuses the request).
//! - Any other request: the function's response, with
//!   `Access-Control-Allow-Origin` (and `-Allow-Credentials`) when its
//!   `Origin` is listed, and `Vary: Origin` always.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, DeployError};

/// Most origins one function may list.
pub const MAX_ORIGINS: usize = 64;
/// Longest `Access-Control-Request-Headers` echoed in a preflight's answer
/// (a longer list is not echoed: the browser then refuses the request).
pub const MAX_REQUEST_HEADERS_LEN: usize = 1024;
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE_SECS: u32 = 600;
/// What a preflight's answer allows: any method a route may serve.
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A function's CORS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cors {
    /// Allowed origins, `scheme://host[:port]` (lower case, default ports
    /// dropped), or `*` for any.
    pub origins: Vec<String>,
    /// Whether browsers may send credentials (cookies, authorization):
    /// answered with `Access-Control-Allow-Credentials: true`. Never with
    /// `*`.
    #[serde(default)]
    pub credentials: bool,
}

/// `scheme://host[:port]`, lower case, the default port of http and https
/// dropped (browsers never send it); or `*`.
pub(crate) fn parse_origin(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "CORS origin {text:?}: {why} (give scheme://host[:port], e.g. https://app.example.com, or *)"
        )
    };
    if text == "*" {
        return Ok(text.into());
    }
    let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme://"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(bad("not a scheme"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad("an origin has no path, query or fragment"));
    }
    if rest.contains('@') {
        return Err(bad("an origin has no user name"));
    }
    let (host, port) = if rest.starts_with('[') {
        // An IPv6 address: `[::1]` or `[::1]:8080`.
        let end = rest
            .find(']')
            .ok_or_else(|| bad("not a host name or address"))?;
        match &rest[end + 1..] {
            "" => (&rest[..=end], None),
            tail => match tail.strip_prefix(':') {
                Some(p) => (&rest[..=end], Some(p)),
                None => return Err(bad("not a host name or address")),
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !host_ok {
        return Err(bad("not a host name or address"));
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p.parse().map_err(|_| bad("the port is not 1 to 65535"))?;
            if n == 0 {
                return Err(bad("the port is not 1 to 65535"));
            }
            let default = matches!((scheme.as_str(), n), ("http", 80) | ("https", 443));
            (!default).then_some(n)
        }
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The new version's CORS settings: the deploy's origins (`none` alone
/// removes CORS) else the active version's; credentials likewise, else
/// off. Refused: a bad origin, too many, `*` with credentials, credentials
/// without origins.
pub(crate) fn resolve(
    origins: &[String],
    credentials: Option<bool>,
    previous: Option<&Cors>,
) -> Result<Option<Cors>, DeployError> {
    let bad = |m: String| DeployError::InvalidArgument(m);
    let origins: Vec<String> = if origins.is_empty() {
        previous.map(|p| p.origins.clone()).unwrap_or_default()
    } else if origins.iter().any(|o| o.eq_ignore_ascii_case("none")) {
        if origins.len() > 1 {
            return Err(bad(
                "cors_origin none removes CORS; it cannot be given with origins".into(),
            ));
        }
        Vec::new()
    } else {
        if origins.len() > MAX_ORIGINS {
            return Err(bad(format!(
                "{} CORS origins; the most is {MAX_ORIGINS}",
                origins.len()
            )));
        }
        let mut parsed: Vec<String> = Vec::with_capacity(origins.len());
        for o in origins {
            let o = parse_origin(o).map_err(bad)?;
            if !parsed.contains(&o) {
                parsed.push(o);
            }
        }
        parsed
    };
    if origins.is_empty() {
        if credentials == Some(true) {
            return Err(bad(
                "cors_credentials needs CORS origins (--cors-origin)".into()
            ));
        }
        return Ok(None);
    }
    let credentials = credentials
        .or(previous.map(|p| p.credentials))
        .unwrap_or(false);
    if credentials && origins.iter().any(|o| o == "*") {
        return Err(bad(
            "CORS origin * cannot be used with credentials (--cors-credentials): browsers refuse \
             it; list the origins"
                .into(),
        ));
    }
    Ok(Some(Cors {
        origins,
        credentials,
    }))
}

impl Cors {
    /// The `Access-Control-Allow-Origin` for a request from `origin`, if
    /// it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?;
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(text)) {
            return Some(origin.clone());
        }
        if self.origins.iter().any(|o| o == "*") {
            // Never with credentials (refused at deploy).
            return Some(HeaderValue::from_static("*"));
        }
        None
    }
}

/// Whether `request` is a CORS preflight.
pub(crate) fn is_preflight(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The host's answer to a preflight for function `name`.
pub(crate) fn preflight(cors: &Cors, name: &str, request: &Request<Body>) -> Response<Body> {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN);
    let Some(allow) = origin.and_then(|o| cors.allow_origin(o)) else {
        let shown = origin
            .map(|o| crate::untrusted::clip(&String::from_utf8_lossy(o.as_bytes())).into_owned())
            .unwrap_or_default();
        let mut resp = axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::FORBIDDEN,
            "cors_origin_not_allowed",
            format!("origin {shown:?} is not allowed by function {name:?}'s CORS settings"),
        ));
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let out = resp.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        && asked.len() <= MAX_REQUEST_HEADERS_LEN
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(MAX_AGE_SECS),
    );
    if cors.credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    resp
}

/// Marks a response to a request from `origin` (the request's `Origin`)
/// for the browser: allowed, or not (no allow header); `Vary: Origin`
/// either way, since the answer depends on it. The function's own
/// `Access-Control-Allow-*` headers are replaced: with CORS settings, the
/// host owns them.
pub(crate) fn decorate(cors: &Cors, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
    let headers: &mut HeaderMap = resp.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    let Some(allow) = origin.and_then(|o| cors.allow_origin(o)) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        for (given, stored) in [
            ("*", "*"),
            ("https://App.Example.com", "https://app.example.com"),
            ("https://a.example.com:443", "https://a.example.com"),
            ("http://a.example.com:80", "http://a.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://a.example.com:80", "https://a.example.com:80"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://127.0.0.1", "http://127.0.0.1"),
        ] {
            assert_eq!(parse_origin(given).unwrap(), stored, "{given}");
        }
    }

    #[test]
    fn bad_origins_are_refused_naming_the_problem() {
        for (bad, why) in [
            ("example.com", "no scheme"),
            ("https://example.com/", "no path"),
            ("https://example.com/app", "no path"),
            ("https://", "not a host"),
            ("https://exa mple.com", "not a host"),
            ("https://a..b", "not a host"),
            ("https://a.com:0", "port"),
            ("https://a.com:99999", "port"),
            ("https://a.com:x", "port"),
            ("https://u@a.com", "user name"),
            ("1http://a.com", "not a scheme"),
            ("null", "no scheme"),
            ("**", "no scheme"),
        ] {
            let e = parse_origin(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("scheme://host[:port]"), "{e}");
        }
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_are_set_kept_or_removed() {
        let set = resolve(&list(&["https://a.com", "https://A.com"]), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(set.origins, ["https://a.com"], "deduplicated");
        assert!(!set.credentials);
        // Kept by a deploy that says nothing; credentials on their own.
        let kept = resolve(&[], Some(true), Some(&set)).unwrap().unwrap();
        assert_eq!(kept.origins, set.origins);
        assert!(kept.credentials);
        assert_eq!(resolve(&[], None, Some(&kept)).unwrap(), Some(kept.clone()));
        // Removed.
        assert_eq!(resolve(&list(&["none"]), None, Some(&kept)).unwrap(), None);
        assert_eq!(resolve(&[], None, None).unwrap(), None);
    }

    #[test]
    fn refuses_star_with_credentials_and_credentials_alone() {
        let e = resolve(&list(&["*"]), Some(true), None).unwrap_err();
        assert!(
            e.to_string().contains("cannot be used with credentials"),
            "{e}"
        );
        let e = resolve(&[], Some(true), None).unwrap_err();
        assert!(e.to_string().contains("needs CORS origins"), "{e}");
        let e = resolve(&list(&["none", "https://a.com"]), None, None).unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("https://a{i}.com")).collect();
        assert!(resolve(&many, None, None).is_err());
    }

    #[test]
    fn allowed_origins_and_star() {
        let cors = Cors {
            origins: list(&["https://a.com"]),
            credentials: true,
        };
        let a = HeaderValue::from_static("https://A.com");
        assert_eq!(cors.allow_origin(&a).unwrap(), a, "echoed");
        assert!(
            cors.allow_origin(&HeaderValue::from_static("https://b.com"))
                .is_none()
        );
        let any = Cors {
            origins: list(&["*"]),
            credentials: false,
        };
        assert_eq!(
            any.allow_origin(&HeaderValue::from_static("https://b.com"))
                .unwrap(),
            "*"
        );
    }
}
