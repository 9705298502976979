//! The dashboard: a page, a script and a style sheet built into the
//! binary, served at `/ui/` on the admin listener without the token. The
//! page holds no data: the script asks the same admin API the CLI uses,
//! with the token the user signs in with (kept in the tab's session
//! storage, sent as a bearer header).
//!
//! Not in the OpenAPI document: it is no API. Every answer carries a strict
//! Content-Security-Policy (no inline script or style, nothing from another
//! origin, no framing), so that text a guest or client controls (log lines,
//! error messages, names), which the script only ever sets as text, cannot
//! become markup that runs either.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The policy of every asset: only this origin's script, style and API;
/// images also as `data:` URLs; no `<base>`, no form posts, no framing
/// (clickjacking).
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// One asset: its bytes and their type, and an ETag computed once.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    etag: LazyLock<HeaderValue>,
}

/// An [`Asset`] of the file `$file` (relative to this module).
macro_rules! asset {
    ($content_type:expr, $file:expr) => {{
        const BODY: &[u8] = include_bytes!($file);
        Asset {
            content_type: $content_type,
            body: BODY,
            etag: LazyLock::new(|| etag_of(BODY)),
        }
    }};
}

static INDEX: Asset = asset!("text/html; charset=utf-8", "ui/index.html");

const JS: &str = "text/javascript; charset=utf-8";

/// The files under `/ui/` (the page itself is `/ui/`): the style sheet and
/// the script's modules (`app.js` imports the others).
static FILES: [(&str, Asset); 7] = [
    ("app.css", asset!("text/css; charset=utf-8", "ui/app.css")),
    ("app.js", asset!(JS, "ui/app.js")),
    ("dom.js", asset!(JS, "ui/dom.js")),
    ("api.js", asset!(JS, "ui/api.js")),
    ("function.js", asset!(JS, "ui/function.js")),
    ("logs.js", asset!(JS, "ui/logs.js")),
    ("events.js", asset!(JS, "ui/events.js")),
];

/// A strong ETag: the first 16 hex digits of the bytes' sha256.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex digits are a valid header")
}

/// The dashboard's routes; any other path under `/ui/` falls through to the
/// admin router's 404.
pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let router = Router::new()
        // Relative asset URLs in the page resolve under `/ui/`.
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| serve(&INDEX, headers)));
    FILES.iter().fold(router, |router, (name, asset)| {
        router.route(
            &format!("/ui/{name}"),
            get(move |headers: HeaderMap| serve(asset, headers)),
        )
    })
}

/// Answers `asset`, or 304 when the client's copy is current.
/// `no-cache`: a browser revalidates each time (cheap, with the ETag), so
/// that a new binary's dashboard is never mixed with an old cached script.
async fn serve(asset: &'static Asset, request: HeaderMap) -> Response {
    let etag = &*asset.etag;
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|given| {
        given
            .as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::StoreLocation;
    use crate::{Host, HostConfig};

    /// The admin router (the dashboard merged into its public side) on a
    /// temporary host.
    fn admin() -> Router {
        let config = HostConfig {
            store: StoreLocation::Temporary,
            admin_token: Some("a-test-token-a-test-token".into()),
            pooling: false,
            ..HostConfig::default()
        };
        super::super::router(Host::builder().config(config).build().unwrap())
    }

    async fn get(router: &Router, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = axum::http::Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_asset_is_served_without_a_token_with_its_type_and_the_policy() {
        let router = admin();
        let mut cases = vec![(
            "/ui/".to_string(),
            "text/html; charset=utf-8",
            "<!doctype html>",
        )];
        for (name, asset) in &FILES {
            let starts = if name.ends_with(".css") { "/*" } else { "//" };
            cases.push((format!("/ui/{name}"), asset.content_type, starts));
        }
        for (uri, content_type, starts) in cases {
            let uri = uri.as_str();
            let resp = get(&router, uri, &[]).await;
            assert_eq!(resp.status(), StatusCode::OK, "{uri}");
            let h = resp.headers().clone();
            assert_eq!(h[header::CONTENT_TYPE], content_type, "{uri}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{uri}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{uri}");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{uri}");
            assert!(h.contains_key(header::ETAG), "{uri}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.starts_with(starts.as_bytes()), "{uri}");
        }
    }

    #[test]
    fn the_policy_is_the_contracts() {
        assert_eq!(
            CSP,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        );
    }

    /// A module the page imports but the binary does not serve would break
    /// the whole dashboard.
    #[test]
    fn every_module_a_script_imports_is_served() {
        for (name, asset) in FILES.iter().filter(|(name, _)| name.ends_with(".js")) {
            let script = std::str::from_utf8(asset.body).unwrap();
            for import in script.split("from './").skip(1) {
                let file = &import[..import.find('\'').unwrap()];
                assert!(
                    FILES.iter().any(|(served, _)| *served == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_current_copy_gets_304_with_the_same_headers() {
        let router = admin();
        let first = get(&router, "/ui/app.js", &[]).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get(&router, "/ui/app.js", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let stale = get(&router, "/ui/app.js", &[("if-none-match", "\"old\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn ui_redirects_to_the_page_and_an_unknown_asset_is_404() {
        let router = admin();
        let resp = get(&router, "/ui", &[]).await;
        assert!(resp.status().is_redirection());
        assert_eq!(resp.headers()[header::LOCATION], "/ui/");
        for uri in ["/ui/nope.js", "/ui/app.js/x", "/ui/index.html"] {
            let resp = get(&router, uri, &[]).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    /// What the page needs stays small, and the script never builds markup
    /// from strings (the CSP would not stop that; only text is set).
    #[test]
    fn the_assets_are_small_and_set_no_markup_from_strings() {
        let total: usize =
            INDEX.body.len() + FILES.iter().map(|(_, a)| a.body.len()).sum::<usize>();
        assert!(total <= 300 * 1024, "{total} bytes");
        for (name, asset) in FILES.iter().filter(|(name, _)| name.ends_with(".js")) {
            let script = std::str::from_utf8(asset.body).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "alert(",
                "confirm(",
                "prompt(",
                "eval(",
            ] {
                assert!(!script.contains(banned), "{name} uses {banned}");
            }
        }
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(!page.contains("style="), "inline style in index.html");
        assert!(!page.contains("<script>"), "inline script in index.html");
    }
}
