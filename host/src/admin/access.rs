//! Who may call what: the check in front of every protected route. The
//! bearer token names a caller (the bootstrap token, or one created under
//! `/v1/tokens`); the route names what the request needs ([`need`]); a
//! caller without a scope that allows it gets 403 naming the scope. Every
//! request but a read (GET, HEAD) that got past the token is written to the
//! audit log, with its answer's status.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use crate::Host;
use crate::auth::scope::Need;
use crate::auth::{Caller, Refused};
use crate::error::ApiError;

/// Checks `Authorization: Bearer <token>` (hashes compared in constant
/// time; the token is never logged), then the scope the route needs; then
/// records a write in the audit log.
pub(super) async fn require_scope(State(host): State<Host>, req: Request, next: Next) -> Response {
    let caller = match authenticate(&host, &req) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.into_response(),
    };
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let function = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(key, _)| *key == "name")
                .map(|(_, value)| value.to_string())
        });
    let need = need(&parts.method, &route, function.as_deref());
    // What the audit log keeps of a write: the method and the path, no
    // query (a query may carry a value), no body, no header.
    let write = !matches!(parts.method, Method::GET | Method::HEAD);
    let what = write.then(|| (parts.method.to_string(), parts.uri.path().to_string()));

    let name = caller.name().to_string();
    let response = if caller.allows(&need) {
        // For the routes that answer each caller with what it may see.
        parts.extensions.insert(caller);
        next.run(Request::from_parts(parts, body)).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the scope {}", need.wanted()),
        )
        .into_response()
    };
    if let Some((method, path)) = what {
        let status = response.status().as_u16();
        if let Err(e) = host.inner.audit.record(&name, &method, &path, status).await {
            tracing::error!(error = %e, %method, "writing the audit log failed");
        }
    }
    response
}

/// The caller a request's bearer token names, or the 401 it gets.
fn authenticate(host: &Host, req: &Request) -> Result<Caller, ApiError> {
    let unauthorized = |msg: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg);
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` (the CLI reads WISP_ADMIN_TOKEN)"
                    .into(),
            )
        })?;
    host.inner
        .tokens
        .authenticate(given, host.admin_token().expose_secret())
        .map_err(|refused| match refused {
            Refused::Unknown => unauthorized("invalid bearer token".into()),
            Refused::Expired(name) => unauthorized(format!(
                "the token `{name}` expired: create a new one (`wisp token create`)"
            )),
        })
}

/// What a request needs, from its method, its route (axum's matched path,
/// `/v1/functions/{name}/kv/{*key}`) and the function the path names. The
/// README's table of scopes is this function's; a route not named here
/// needs `admin`, so that a new route is closed until it is placed.
pub(super) fn need(method: &Method, route: &str, function: Option<&str>) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    // Answered with what the caller may see: any token will do.
    if read && (route == "/v1/whoami" || route == "/v1/stats") {
        return Need::Any;
    }
    if route == "/v1/tokens" || route.starts_with("/v1/tokens/") || route == "/v1/audit" {
        return Need::Admin;
    }
    if let (Some(rest), Some(f)) = (route.strip_prefix("/v1/functions/{name}"), function) {
        let f = f.to_string();
        return match rest {
            "/invoke" | "/invoke-async" => Need::Invoke(f),
            _ if read => Need::ReadFunction(f),
            "" | "/rollback" | "/config" | "/config/{key}" | "/kv/{*key}" | "/aliases/{alias}"
            | "/keys" | "/keys/{key}" => Need::Deploy(f),
            // Dead letters (purge, redrive) and jobs: the event plane's.
            _ => Need::Admin,
        };
    }
    if read { Need::Read } else { Need::Admin }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the document, each with the scope it needs: the
    /// README's table. A new route fails here until it is placed.
    #[test]
    fn every_route_needs_the_scope_the_readme_says() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let mut table = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            // The document's `{key}` is the route's `{*key}`.
            let route = path.replace("/kv/{key}", "/kv/{*key}");
            let function = route.contains("{name}").then_some("hello");
            for method in item.as_object().unwrap().keys() {
                let Ok(m) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                if path == "/v1/health" {
                    continue;
                }
                let need = match need(&m, &route, function) {
                    Need::Any => "any".to_string(),
                    Need::Admin => "admin".to_string(),
                    Need::Read => "read:*".to_string(),
                    Need::ReadFunction(f) => format!("read:* or deploy:{f}"),
                    Need::Deploy(f) => format!("deploy:{f}"),
                    Need::Invoke(f) => format!("invoke:{f}"),
                };
                table.push(format!("{} {path} {need}", m.as_str()));
            }
        }
        table.sort();
        let expected = [
            "DELETE /v1/functions/{name} deploy:hello",
            "DELETE /v1/functions/{name}/aliases/{alias} deploy:hello",
            "DELETE /v1/functions/{name}/config/{key} deploy:hello",
            "DELETE /v1/functions/{name}/dlq admin",
            "DELETE /v1/functions/{name}/invoke invoke:hello",
            "DELETE /v1/functions/{name}/keys/{key} deploy:hello",
            "DELETE /v1/functions/{name}/kv/{key} deploy:hello",
            "DELETE /v1/schedules/{id} admin",
            "DELETE /v1/subscriptions/{function}/{topic} admin",
            "DELETE /v1/tokens/{token} admin",
            "GET /metrics read:*",
            "GET /v1/audit admin",
            "GET /v1/events/{id} read:*",
            "GET /v1/functions read:*",
            "GET /v1/functions/{name} read:* or deploy:hello",
            "GET /v1/functions/{name}/aliases read:* or deploy:hello",
            "GET /v1/functions/{name}/config read:* or deploy:hello",
            "GET /v1/functions/{name}/dlq read:* or deploy:hello",
            "GET /v1/functions/{name}/invoke invoke:hello",
            "GET /v1/functions/{name}/keys read:* or deploy:hello",
            "GET /v1/functions/{name}/kv read:* or deploy:hello",
            "GET /v1/functions/{name}/kv/{key} read:* or deploy:hello",
            "GET /v1/functions/{name}/logs read:* or deploy:hello",
            "GET /v1/functions/{name}/logs/stream read:* or deploy:hello",
            "GET /v1/functions/{name}/stats read:* or deploy:hello",
            "GET /v1/functions/{name}/versions read:* or deploy:hello",
            "GET /v1/hosts read:*",
            "GET /v1/jobs read:*",
            "GET /v1/jobs/{id} read:*",
            "GET /v1/openapi.json read:*",
            "GET /v1/schedules read:*",
            "GET /v1/stats any",
            "GET /v1/subscriptions read:*",
            "GET /v1/tokens admin",
            "GET /v1/whoami any",
            "HEAD /v1/functions/{name}/invoke invoke:hello",
            "OPTIONS /v1/functions/{name}/invoke invoke:hello",
            "PATCH /v1/functions/{name}/invoke invoke:hello",
            "POST /v1/functions/{name} deploy:hello",
            "POST /v1/functions/{name}/dlq/redrive admin",
            "POST /v1/functions/{name}/invoke invoke:hello",
            "POST /v1/functions/{name}/invoke-async invoke:hello",
            "POST /v1/functions/{name}/jobs admin",
            "POST /v1/functions/{name}/keys deploy:hello",
            "POST /v1/functions/{name}/rollback deploy:hello",
            "POST /v1/jobs/{id}/cancel admin",
            "POST /v1/schedules admin",
            "POST /v1/subscriptions admin",
            "POST /v1/tokens admin",
            "POST /v1/topics/{topic}/events admin",
            "PUT /v1/functions/{name}/aliases/{alias} deploy:hello",
            "PUT /v1/functions/{name}/config deploy:hello",
            "PUT /v1/functions/{name}/invoke invoke:hello",
            "PUT /v1/functions/{name}/kv/{key} deploy:hello",
            "TRACE /v1/functions/{name}/invoke invoke:hello",
        ];
        assert_eq!(table, expected, "{table:#?}");
    }

    #[test]
    fn any_token_may_ask_who_it_is_and_read_the_stats_it_may_see() {
        assert_eq!(need(&Method::GET, "/v1/whoami", None), Need::Any);
        assert_eq!(need(&Method::GET, "/v1/stats", None), Need::Any);
        assert_eq!(need(&Method::POST, "/v1/stats", None), Need::Admin);
    }

    #[test]
    fn a_route_not_placed_needs_admin_to_write_and_read_all_to_read() {
        assert_eq!(need(&Method::POST, "/v1/new-thing", None), Need::Admin);
        assert_eq!(need(&Method::GET, "/v1/new-thing", None), Need::Read);
        assert_eq!(
            need(&Method::PUT, "/v1/functions/{name}/new-thing", Some("f")),
            Need::Admin
        );
    }
}
