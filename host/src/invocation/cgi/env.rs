//! A request as a preview-1 module sees it: CGI/1.1 meta-variables, the
//! headers as `HTTP_*` variables, the function's own variables, and the
//! query's arguments as argv, as WAGI does.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

/// What the CGI variables are made of.
pub(super) struct RequestInfo<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) query: &'a str,
    pub(super) headers: &'a HeaderMap,
    pub(super) script_name: &'a str,
    pub(super) body_len: usize,
    pub(super) remote: Option<SocketAddr>,
    pub(super) version: http::Version,
    /// The request came over TLS.
    pub(super) secure: bool,
}

/// The CGI/1.1 meta-variables (RFC 3875, section 4.1) and the common
/// extensions Wisp sets (`REQUEST_URI`, `REMOTE_PORT`, `REQUEST_SCHEME`, and
/// `HTTPS=on` over TLS). Together with every
/// `HTTP_*` name they describe the request, so the function's configured
/// variables never take one of these names (see [`is_meta_variable`]).
const META_VARIABLES: &[&str] = &[
    "AUTH_TYPE",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "GATEWAY_INTERFACE",
    "HTTPS",
    "PATH_INFO",
    "PATH_TRANSLATED",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_IDENT",
    "REMOTE_PORT",
    "REMOTE_USER",
    "REQUEST_METHOD",
    "REQUEST_SCHEME",
    "REQUEST_URI",
    "SCRIPT_NAME",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
];

/// Whether a variable name belongs to the request (a CGI meta-variable or a
/// header's `HTTP_*`), whether or not this request sets it: a configured
/// `CONTENT_TYPE` must not pass for the request's when it has none.
fn is_meta_variable(name: &str) -> bool {
    name.starts_with("HTTP_") || META_VARIABLES.contains(&name)
}

/// The guest's environment: the CGI/1.1 variables, then the function's
/// configured variables except those named like a meta-variable, which are
/// dropped. Each name appears once: wasi-libc's `getenv` (and so Rust's
/// `std::env::var`) returns the *first* of duplicates, so a configured
/// variable listed before the request's would silently win. Dropped rather
/// than refused at deploy because the same variables also come from the
/// configuration (`config_env`), which changes without a deploy, and serve
/// components too, where these names mean nothing special.
pub(super) fn cgi_env(
    req: &RequestInfo<'_>,
    function_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        Vec::with_capacity(function_env.len() + 16 + req.headers.len());
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        format!("wisp/{}", env!("CARGO_PKG_VERSION")),
    );
    set("SERVER_PROTOCOL", format!("{:?}", req.version));
    set("REQUEST_METHOD", req.method.into());
    set("SCRIPT_NAME", req.script_name.into());
    let path_info = req.path.strip_prefix(req.script_name).unwrap_or(req.path);
    set("PATH_INFO", path_info.into());
    set("QUERY_STRING", req.query.into());
    let uri = if req.query.is_empty() {
        req.path.to_string()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    set("REQUEST_URI", uri);
    if let Some(ct) = req.headers.get(header::CONTENT_TYPE) {
        set(
            "CONTENT_TYPE",
            String::from_utf8_lossy(ct.as_bytes()).into_owned(),
        );
    }
    if req.body_len > 0 || req.headers.contains_key(header::CONTENT_LENGTH) {
        set("CONTENT_LENGTH", req.body_len.to_string());
    }
    set(
        "REQUEST_SCHEME",
        if req.secure { "https" } else { "http" }.into(),
    );
    if req.secure {
        set("HTTPS", "on".into());
    }
    let (name, port) = server_name_port(req.headers, req.secure);
    set("SERVER_NAME", name);
    set("SERVER_PORT", port.to_string());
    match req.remote {
        Some(addr) => {
            set("REMOTE_ADDR", addr.ip().to_string());
            set("REMOTE_PORT", addr.port().to_string());
        }
        None => set("REMOTE_ADDR", "127.0.0.1".into()),
    }
    for name in req.headers.keys() {
        // Content-Type and Content-Length have variables of their own.
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        // `X_User` and `X-User` would both be `HTTP_X_USER`: a client could
        // shadow a header a proxy in front of Wisp set (or vouched for) with
        // one of its own. Names with `_` are dropped, as nginx and Apache
        // httpd drop them; the remaining mapping is one-to-one (header names
        // are lower case, `-` becomes `_`).
        if name.as_str().contains('_') {
            continue;
        }
        let mut value = String::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.push_str(", ");
            }
            value.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        let var: String = "HTTP_"
            .chars()
            .chain(name.as_str().chars().map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            }))
            .collect();
        set(&var, value);
    }
    env.extend(
        function_env
            .iter()
            .filter(|(k, _)| !is_meta_variable(k))
            .cloned(),
    );
    env
}

/// `SERVER_NAME` and `SERVER_PORT` from the `Host` header.
fn server_name_port(headers: &HeaderMap, secure: bool) -> (String, u16) {
    let default_port = if secure { 443 } else { 80 };
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    match authority {
        Some(a) => (
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            a.port_u16().unwrap_or(default_port),
        ),
        None => ("localhost".into(), default_port),
    }
}

/// argv: the script name (the function's name when there is none), then
/// each query parameter, decoded (`a=1&b` → `a=1`, `b`), as WAGI does.
pub(super) fn cgi_args(script_name: &str, function: &str, query: &str) -> Vec<String> {
    let argv0 = if script_name.is_empty() {
        function
    } else {
        script_name
    };
    std::iter::once(argv0.to_string())
        .chain(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(percent_decode),
        )
        .collect()
}

/// Decodes `%XX` and `+` (form encoding); malformed escapes stay as they
/// are, bytes that are not UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn decodes_query_arguments() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(
            cgi_args("/api", "f", "x=1&&y=a%2Fb&flag"),
            ["/api", "x=1", "y=a/b", "flag"]
        );
        assert_eq!(cgi_args("", "f", ""), ["f"]);
    }

    /// A variable as wasi-libc's `getenv` sees it: the first of its name.
    fn getenv<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn request_info(headers: &HeaderMap) -> RequestInfo<'_> {
        RequestInfo {
            method: "POST",
            path: "/api/items/7",
            query: "q=1",
            headers,
            script_name: "/api",
            body_len: 3,
            remote: Some("10.0.0.1:5555".parse().unwrap()),
            version: http::Version::HTTP_11,
            secure: false,
        }
    }

    fn assert_names_unique(env: &[(String, String)]) {
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate names in {env:?}");
    }

    #[test]
    fn builds_the_cgi_environment() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let env = cgi_env(&request_info(&headers), &[("MINE".into(), "x".into())]);
        let get = |k: &str| getenv(&env, k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(get("REQUEST_METHOD"), "POST");
        assert_eq!(get("SCRIPT_NAME"), "/api");
        assert_eq!(get("PATH_INFO"), "/items/7");
        assert_eq!(get("QUERY_STRING"), "q=1");
        assert_eq!(get("CONTENT_TYPE"), "text/plain");
        assert_eq!(get("CONTENT_LENGTH"), "3");
        assert_eq!(get("SERVER_NAME"), "example.com");
        assert_eq!(get("SERVER_PORT"), "8080");
        assert_eq!(get("REMOTE_ADDR"), "10.0.0.1");
        assert_eq!(get("HTTP_X_MULTI"), "a, b");
        assert_eq!(get("HTTP_HOST"), "example.com:8080");
        assert_eq!(get("MINE"), "x");
        assert!(getenv(&env, "HTTP_CONTENT_TYPE").is_none());
        assert_names_unique(&env);
    }

    #[test]
    fn configured_variables_never_take_a_meta_variable_name() {
        let mut headers = HeaderMap::new();
        headers.insert("x-thing", HeaderValue::from_static("real"));
        let configured: Vec<(String, String)> = [
            ("REQUEST_METHOD", "HACKED"),
            ("SCRIPT_NAME", "/evil"),
            ("HTTP_X_THING", "forged"),
            ("HTTP_X_ABSENT", "forged"),
            // Meta-variables this request does not set are dropped too.
            ("REMOTE_USER", "admin"),
            ("AUTH_TYPE", "Basic"),
            // Nor may a function pass for one served over TLS.
            ("HTTPS", "on"),
            ("MINE", "x"),
            // Names are case-sensitive: this one is not a meta-variable.
            ("request_method", "lower"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = RequestInfo {
            body_len: 0,
            ..request_info(&headers)
        };
        let env = cgi_env(&info, &configured);
        assert_eq!(getenv(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(getenv(&env, "SCRIPT_NAME"), Some("/api"));
        assert_eq!(getenv(&env, "HTTP_X_THING"), Some("real"));
        for dropped in [
            "HTTP_X_ABSENT",
            "REMOTE_USER",
            "AUTH_TYPE",
            "CONTENT_LENGTH",
            "HTTPS",
        ] {
            assert_eq!(getenv(&env, dropped), None, "{dropped}");
        }
        assert_eq!(getenv(&env, "MINE"), Some("x"));
        assert_eq!(getenv(&env, "request_method"), Some("lower"));
        assert_names_unique(&env);

        assert!(is_meta_variable("HTTP_"));
        assert!(is_meta_variable("PATH_TRANSLATED"));
        assert!(is_meta_variable("HTTPS"));
        assert!(!is_meta_variable("PATH"));
    }

    #[test]
    fn header_names_with_underscores_cannot_shadow() {
        // Both orders: whichever arrives first, `X_User` is not `X-User`.
        for first_underscore in [false, true] {
            let mut headers = HeaderMap::new();
            let (a, b) = (("x-user", "alice"), ("x_user", "mallory"));
            let (first, second) = if first_underscore { (b, a) } else { (a, b) };
            headers.insert(first.0, HeaderValue::from_static(first.1));
            headers.insert(second.0, HeaderValue::from_static(second.1));
            headers.insert("x_only", HeaderValue::from_static("z"));
            let env = cgi_env(&request_info(&headers), &[]);
            assert_eq!(getenv(&env, "HTTP_X_USER"), Some("alice"));
            assert_eq!(getenv(&env, "HTTP_X_ONLY"), None);
            assert!(
                !env.iter().any(|(_, v)| v == "mallory" || v == "z"),
                "{env:?}"
            );
            assert_names_unique(&env);
        }
    }
}
