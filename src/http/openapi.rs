//! The OpenAPI 3.1 document: title, security scheme, and the error schema every route shares.
//! Routes register themselves through `utoipa_axum::routes!`, annotating only the answers
//! that are theirs (a success, a specific error code); `complete` then adds what every route
//! of a kind answers alike — 401 on secured routes, 404 where the path has an id, 400/422
//! where there is a body or a query, 503 everywhere — gives every error the problem+json
//! schema, and every response its required description.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Content, Ref, RefOr,
        path::{Operation, ParameterIn, PathItem},
        response::Response,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::{FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticketing API",
        description = "Create events, sell tickets through Paystack, hold and present them at the door. \
            Every error is `application/problem+json` with a stable `code`."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Signup, login, two-factor, password reset"),
        (name = "users", description = "The caller's profile, tickets and organizer account"),
        (name = "events", description = "Events: create, browse, nearby, change, cancel"),
        (name = "tickets", description = "Tiers, discounts, purchases and sales"),
        (name = "payments", description = "Banks, Paystack webhooks, order lookups"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

/// The answers every route of a kind shares, added where a route does not say more.
pub fn complete(api: &mut openapi::OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        let path_has_id = path.contains('{');
        for op in operations(item) {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let has_query = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
            let defaults = [
                (
                    has_body || has_query,
                    "400",
                    "`malformed_json`, `invalid_query` or another malformed request",
                ),
                (
                    secured,
                    "401",
                    "Not authenticated: the token is missing, expired, revoked or malformed",
                ),
                (
                    path_has_id,
                    "404",
                    "Not found (a malformed id in the path included)",
                ),
                (
                    has_body,
                    "415",
                    "`unsupported_media_type`: no body, or not `application/json` (`multipart/form-data` where the route takes a poster)",
                ),
                (
                    has_body,
                    "422",
                    "`validation_failed`: the `errors` list names each field",
                ),
                (
                    true,
                    "503",
                    "`service_unavailable` (a dependency is down, or the service is overloaded: no database connection or password-hashing slot within a second) or `timeout`; retry after `Retry-After`",
                ),
            ];
            for (applies, status, description) in defaults {
                if applies {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(Response::new(description)));
                }
            }
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if response.description.trim().is_empty() {
                    response.description = reason(status).to_owned();
                }
                let is_error = status.starts_with('4') || status.starts_with('5');
                if is_error && response.content.is_empty() {
                    response.content.insert(
                        "application/problem+json".to_owned(),
                        RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
                    );
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn reason(status: &str) -> &'static str {
    status
        .parse::<u16>()
        .ok()
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
}
