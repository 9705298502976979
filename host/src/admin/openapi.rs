//! The OpenAPI document of the admin API, and what the layers and
//! extractors in front of the handlers add to it.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Deleted;
use super::functions::RollbackRequest;
use super::health::Health;
use super::kv::KvStored;
use crate::Host;
use crate::capabilities::logs::{LogEntry, LogLevel, LogPage, LogStream};
use crate::config::Limits;
use crate::error::ErrorBody;
use crate::function::wire::{FunctionInfo, FunctionSummary, VersionInfo};
use crate::{ConfigEntry, ConfigList, KeyList, SetConfig};

/// What the document says besides its paths: its title, the schemas of
/// every body (those the paths name are added by the routes), the bearer
/// scheme.
#[derive(OpenApi)]
#[openapi(
    info(title = "Wisp admin API", description = "Deploy, version, roll back, delete and invoke WebAssembly functions."),
    components(schemas(crate::events::Published, crate::events::NewSubscription, crate::events::Subscription, crate::events::RetryPolicy, crate::events::EventInfo, crate::events::DeliveryRecord, crate::events::DeliveryStatus, crate::events::RedriveRequest, crate::events::Redriven, crate::events::Purged, crate::events::NewSchedule, crate::events::Schedule, crate::events::NewJob, crate::events::JobInfo, crate::events::JobState, crate::events::JobCounts, crate::events::JobTask, LogPage, LogEntry, LogStream, LogLevel, FunctionInfo, FunctionSummary, VersionInfo, Limits, ErrorBody, crate::error::ErrorDetail, RollbackRequest, Health, Deleted, KeyList, KvStored, ConfigList, ConfigEntry, SetConfig, crate::auth::NewToken, crate::auth::TokenInfo, crate::auth::CreatedToken, crate::auth::AuditEntry, crate::auth::AuditPage, crate::auth::NewKey, crate::auth::KeyInfo, crate::auth::CreatedKey, crate::auth::FunctionAuth)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What the layers and extractors in front of the handlers answer, added to
/// every operation they apply to, so that the document lists every status a
/// route can give: 401 and 403 (the token and scope check) on all but health; 400 where there
/// are path parameters (one that does not decode, `ApiPath`) or query
/// parameters (one of the wrong type, `ApiQuery`); 400, 413 and
/// 415 where the body is JSON (`ApiJson`). Parameters that name a function
/// or a topic in a path, or the path a function sees, get their rule as a
/// pattern and an example; `u64`s are documented as such.
struct EdgeResponses;

/// A function name (`routes::validate_name`).
pub(super) const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A topic name (`events::validate_topic`).
const TOPIC_PATTERN: &str = "^[a-z0-9._-]{1,63}$";

impl utoipa::Modify for EdgeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::SecurityRequirement;
        use utoipa::openapi::path::ParameterIn;
        let schemas = openapi
            .components
            .iter_mut()
            .flat_map(|c| c.schemas.values_mut());
        for schema in schemas {
            if let RefOr::T(Schema::Object(object)) = schema {
                for property in object.properties.values_mut() {
                    if let RefOr::T(Schema::Object(property)) = property {
                        unsigned_64(property);
                    }
                }
            }
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                // `security(())`: no requirement, as health has.
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.contains(&SecurityRequirement::default()));
                if !public {
                    add_error(
                        op,
                        401,
                        "unauthorized: the bearer token is missing, unknown, revoked or expired",
                    );
                    add_error(
                        op,
                        403,
                        "forbidden: the token lacks the scope this route needs (the message names it)",
                    );
                }
                let (mut path_params, mut query_params) = (false, false);
                for param in op.parameters.iter_mut().flatten() {
                    path_params |= param.parameter_in == ParameterIn::Path;
                    query_params |= param.parameter_in == ParameterIn::Query;
                    if let Some(RefOr::T(Schema::Object(schema))) = &mut param.schema {
                        unsigned_64(schema);
                    }
                    let (pattern, example) = match (param.name.as_str(), &param.parameter_in) {
                        ("name" | "function", ParameterIn::Path) => (NAME_PATTERN, "hello"),
                        ("topic", ParameterIn::Path) => (TOPIC_PATTERN, "orders"),
                        // What a function invoked through the API sees
                        // (empty: `/`).
                        ("path", ParameterIn::Query) => ("^(/|$)", "/hello?x=1"),
                        _ => continue,
                    };
                    if let Some(RefOr::T(Schema::Object(schema))) = &mut param.schema {
                        schema.pattern = Some(pattern.into());
                        schema.examples = vec![example.into()];
                    }
                }
                if path_params {
                    add_error(
                        op,
                        400,
                        "invalid_argument: a path parameter does not decode (percent-encoding, UTF-8)",
                    );
                }
                if query_params {
                    add_error(
                        op,
                        400,
                        "invalid_argument: a query parameter does not decode or is of the wrong type",
                    );
                }
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    add_error(
                        op,
                        400,
                        "invalid_argument: malformed JSON, an unknown or missing field, a wrong type",
                    );
                    add_error(
                        op,
                        413,
                        "payload_too_large: the body is over the JSON body limit (2 MiB)",
                    );
                    add_error(
                        op,
                        415,
                        "unsupported_media_type: the body is not sent as `application/json`",
                    );
                }
            }
        }
    }
}

/// utoipa documents a `u64` as `int64` with minimum 0; the server takes the
/// whole `u64` range, which is `uint64` (the format utoipa itself writes
/// with its `non_strict_integers` feature).
fn unsigned_64(schema: &mut utoipa::openapi::schema::Object) {
    use utoipa::openapi::{KnownFormat, SchemaFormat};
    let int64 = schema.format == Some(SchemaFormat::KnownFormat(KnownFormat::Int64));
    let unsigned = match schema.minimum {
        Some(utoipa::Number::Int(0) | utoipa::Number::UInt(0)) => true,
        Some(utoipa::Number::Float(min)) => min == 0.0,
        _ => false,
    };
    if int64 && unsigned {
        schema.format = Some(SchemaFormat::Custom("uint64".into()));
    }
}

/// Documents `status` with the error body, unless the operation already
/// does.
fn add_error(op: &mut utoipa::openapi::path::Operation, status: u16, description: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
}

/// The OpenAPI document of the admin API, generated from its routes: each
/// is registered with its `#[utoipa::path]` (`routes!`), so none can be
/// served without being documented, nor documented without being served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let routes = super::routes();
    let mut doc = ApiDoc::openapi();
    doc.merge(routes.public.merge(routes.protected).into_openapi());
    CatchAllParameters.modify(&mut doc);
    EdgeResponses.modify(&mut doc);
    doc
}

/// The route of the document itself.
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    // Built once: it does not change while the host runs.
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);
    Json(&DOCUMENT)
}

/// A catch-all parameter is `{*key}` in axum's path syntax (the route) and
/// `{key}` in OpenAPI's (the document).
struct CatchAllParameters;

impl Modify for CatchAllParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = std::mem::take(&mut openapi.paths.paths);
        openapi.paths.paths = paths
            .into_iter()
            .map(|(path, item)| (path.replace("{*", "{"), item))
            .collect();
    }
}

/// Raw bytes: a body taken or answered as is.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct Binary(#[allow(dead_code)] Vec<u8>);
