//! The OpenAPI document's frame: title, description, tags and security schemes. The paths and
//! schemas are generated from the handlers' `#[utoipa::path]` annotations and the protocol types
//! (`feedloop_core::protocol`) as the routes are assembled (`crate::routes::document`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "feedloop server",
        description = "Federated averaging of privatized reward-head updates: clients register with a \
            deployment key, fetch the open round and the current model, and submit one privatized \
            update per round; admins open and close rounds and roll back versions. Times are unix \
            milliseconds; ids and versions are decimal strings. Every error is \
            `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "clients", description = "Registration and tokens"),
        (name = "rounds", description = "Rounds and privatized updates"),
        (name = "models", description = "Published model versions"),
        (name = "feedback", description = "Randomized-response reports and statistics"),
        (name = "admin", description = "Round configuration, rollback, audit log (admin key)"),
        (name = "ops", description = "Health, metrics, this document"),
        (name = "helper", description = "The helper aggregator of secure rounds (`feedloop serve --role helper`)"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "clientToken",
            bearer("The token from POST /v1/clients/register"),
        );
        components.add_security_scheme(
            "leaderToken",
            bearer("A token the helper was given for its leader (`--leader-token`)"),
        );
        components.add_security_scheme(
            "adminKey",
            bearer("An admin key (the audit log stores its SHA-256 fingerprint)"),
        );
    }
}
