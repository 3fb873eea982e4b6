//! The OpenAPI 3.1 document: title, security scheme, and the error schema every route shares.
//! Routes register themselves (with their error responses) through `utoipa_axum::routes!`.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
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
