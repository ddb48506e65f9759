//! The OpenAPI 3 document served at `/openapi.json` (hand-written; a test checks that every
//! route is described).

use serde_json::{json, Value};

fn err(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn body(schema: &str) -> Value {
    json!({ "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn path_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// Every endpoint the server answers.
pub fn document() -> Value {
    let client = json!([{ "clientToken": [] }]);
    let admin = json!([{ "adminKey": [] }]);
    json!({
      "openapi": "3.0.3",
      "info": {
        "title": "feedloop federated averaging server",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Privatized updates in, better global models out. Every error is a 4xx/5xx with {\"error\": {\"code\", \"message\"}}."
      },
      "paths": {
        "/healthz": { "get": { "summary": "Liveness and database check",
            "responses": { "200": ok("Healthy", "Health"), "500": err("Database unreachable") } } },
        "/metrics": { "get": { "summary": "Prometheus metrics (text exposition format)",
            "responses": { "200": { "description": "Metrics", "content": { "text/plain": { "schema": { "type": "string" } } } } } } },
        "/openapi.json": { "get": { "summary": "This document",
            "responses": { "200": { "description": "OpenAPI 3 document", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
        "/v1/clients/register": { "post": { "summary": "First contact: issue a client id and a signed, expiring token",
            "parameters": [{ "name": "X-Feedloop-Deployment-Key", "in": "header", "required": true, "schema": { "type": "string" } }],
            "responses": { "201": ok("Token issued", "Token"), "401": err("Unknown deployment key") } } },
        "/v1/clients/refresh": { "post": { "summary": "A fresh token for the same client", "security": client,
            "responses": { "200": ok("Token issued", "Token"), "401": err("Invalid or expired token") } } },
        "/v1/rounds": { "get": { "summary": "The round log, newest first (the provenance of every version)",
            "parameters": [{ "name": "limit", "in": "query", "schema": { "type": "integer" } }],
            "responses": { "200": { "description": "Rounds", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "rounds": { "type": "array", "items": { "$ref": "#/components/schemas/Round" } } } } } } } } } },
        "/v1/rounds/current": { "get": { "summary": "The open round's configuration (a superset of the client's RoundConfig)",
            "responses": { "200": ok("Open round", "Round"), "404": err("No open round (code no_open_round)") } } },
        "/v1/rounds/{roundId}": { "get": { "summary": "One round", "parameters": [path_param("roundId")],
            "responses": { "200": ok("Round", "Round"), "400": err("Bad id"), "404": err("No such round") } } },
        "/v1/rounds/{roundId}/updates": { "post": {
            "summary": "Submit one privatized update (PrivatizedUpdate::to_bytes) per client per round",
            "security": client,
            "parameters": [path_param("roundId"),
                { "name": "X-Feedloop-Model-Version", "in": "header", "required": false, "schema": { "type": "string" },
                  "description": "The model version the update was computed against (or the modelVersion query parameter)" },
                { "name": "access_token", "in": "query", "required": false, "schema": { "type": "string" },
                  "description": "The client token, for navigator.sendBeacon, which cannot set headers (RFC 6750 §2.3); the Authorization header wins" },
                { "name": "modelVersion", "in": "query", "required": false, "schema": { "type": "string" },
                  "description": "As X-Feedloop-Model-Version, for sendBeacon" }],
            "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
            "responses": {
                "202": ok("Durably stored", "Accepted"),
                "400": err("Missing model version header or bad id"),
                "401": err("Missing/invalid/expired token"),
                "404": err("No such round"),
                "409": err("round_closed, duplicate_update, replayed_update or stale_model_version"),
                "413": err("Body too large"),
                "422": err("invalid_update: malformed encoding, wrong parameters/dimension, out-of-bound lattice values") } } },
        "/v1/models": { "get": { "summary": "All versions and which is current",
            "responses": { "200": { "description": "Versions", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "current": { "type": "string" },
                "versions": { "type": "array", "items": { "$ref": "#/components/schemas/Version" } } } } } } } } } },
        "/v1/models/current": { "get": { "summary": "The current version with its head; ETag \"model-N\"",
            "parameters": [{ "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }],
            "responses": { "200": ok("Version", "Version"), "304": { "description": "Still the version tagged If-None-Match" } } } },
        "/v1/models/{version}": { "get": { "summary": "One version with its head", "parameters": [path_param("version")],
            "responses": { "200": ok("Version", "Version"), "404": err("No such version") } } },
        "/v1/models/{version}/model.onnx": { "get": { "summary": "The version's ONNX file (head initializers rewritten, metadata feedloop.model.version)",
            "parameters": [path_param("version")],
            "responses": { "200": { "description": "ONNX model", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                           "404": err("No such version") } } },
        "/v1/feedback": { "post": { "summary": "One randomized-response thumbs-up bit per client per model version",
            "security": client, "requestBody": body("Report"),
            "responses": { "202": ok("Stored", "Accepted"), "400": err("Bad JSON"), "401": err("Bad token"),
                           "404": err("No such version"), "409": err("duplicate_report") } } },
        "/v1/stats": { "get": { "summary": "De-biased thumbs-up rate per version (95% CI), cohort sizes, ε per round",
            "responses": { "200": ok("Statistics", "Stats") } } },
        "/v1/admin/rounds": { "post": { "summary": "Open a round on the current version", "security": admin,
            "requestBody": body("NewRound"),
            "responses": { "201": ok("Opened", "Round"), "400": err("Invalid configuration"), "401": err("Bad admin key"),
                           "403": err("Admin API disabled"), "409": err("A round is already open") } } },
        "/v1/admin/rounds/{roundId}": { "patch": { "summary": "Change an open round's minCohort, targetCount or deadline", "security": admin,
            "parameters": [path_param("roundId")], "requestBody": body("RoundChange"),
            "responses": { "200": ok("Changed", "Round"), "400": err("Invalid"), "401": err("Bad admin key"), "409": err("Round not open") } } },
        "/v1/admin/rounds/{roundId}/close": { "post": { "summary": "Close a round now (publishes if the cohort is large enough)", "security": admin,
            "parameters": [path_param("roundId")],
            "responses": { "200": ok("Closed", "Round"), "401": err("Bad admin key"), "409": err("Already closed") } } },
        "/v1/admin/rollback": { "post": { "summary": "Make an earlier version current (aborts an open round, resets optimizer state)", "security": admin,
            "requestBody": body("Rollback"),
            "responses": { "200": ok("Now current", "Version"), "401": err("Bad admin key"), "404": err("No such version"), "409": err("Already current") } } },
        "/v1/admin/audit": { "get": { "summary": "The admin audit log, newest first", "security": admin,
            "parameters": [{ "name": "limit", "in": "query", "schema": { "type": "integer" } }],
            "responses": { "200": { "description": "Entries", "content": { "application/json": { "schema": { "type": "object", "properties": {
                "entries": { "type": "array", "items": { "$ref": "#/components/schemas/AuditEntry" } } } } } } }, "401": err("Bad admin key") } } }
      },
      "components": {
        "securitySchemes": {
          "clientToken": { "type": "http", "scheme": "bearer", "description": "Token from /v1/clients/register" },
          "adminKey": { "type": "http", "scheme": "bearer", "description": "An admin key (the audit log stores its SHA-256 fingerprint)" }
        },
        "schemas": {
          "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
              "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
          "Health": { "type": "object", "properties": { "status": { "type": "string" } } },
          "Token": { "type": "object", "properties": { "clientId": { "type": "string" }, "deployment": { "type": "string" },
              "token": { "type": "string" }, "expiresAt": { "type": "integer", "description": "unix ms" },
              "issuedAt": { "type": "integer", "description": "unix ms" } } },
          "Accepted": { "type": "object", "properties": { "accepted": { "type": "boolean" }, "roundId": { "type": "string" },
              "received": { "type": "integer" }, "roundClosed": { "nullable": true, "allOf": [{ "$ref": "#/components/schemas/Round" }] } } },
          "Round": { "type": "object", "properties": {
              "roundId": { "type": "string" }, "modelVersion": { "type": "string" }, "clipNorm": { "type": "number" },
              "granularity": { "type": "number" }, "noiseStddev": { "type": "number" }, "dimension": { "type": "integer" },
              "minCohort": { "type": "integer" }, "targetCount": { "type": "integer", "nullable": true },
              "deadline": { "type": "integer", "nullable": true, "description": "unix ms" },
              "status": { "type": "string", "enum": ["open", "closing", "published", "insufficient", "aborted"] },
              "received": { "type": "integer" }, "createdAt": { "type": "integer" }, "closedAt": { "type": "integer", "nullable": true },
              "closeReason": { "type": "string", "nullable": true }, "cohortSize": { "type": "integer", "nullable": true },
              "publishedVersion": { "type": "string", "nullable": true },
              "privacy": { "type": "object", "properties": { "rho": { "type": "number" }, "epsilonPerParticipant": { "type": "number" }, "delta": { "type": "number" } } } } },
          "Version": { "type": "object", "properties": {
              "version": { "type": "string" }, "parentVersion": { "type": "string", "nullable": true }, "roundId": { "type": "string", "nullable": true },
              "current": { "type": "boolean" }, "cohortSize": { "type": "integer" }, "optimizer": { "type": "string" },
              "noise": { "type": "object" }, "privacy": { "type": "object" }, "onnxSha256": { "type": "string" }, "onnxUrl": { "type": "string" },
              "createdAt": { "type": "integer" }, "flagged": { "type": "boolean" }, "flagReason": { "type": "string", "nullable": true },
              "flaggedAt": { "type": "integer", "nullable": true },
              "head": { "type": "array", "items": { "type": "number" }, "description": "RewardHead::to_vector order (2·D + 3)" } } },
          "Report": { "type": "object", "required": ["modelVersion", "bit"], "properties": {
              "modelVersion": { "type": "string" }, "bit": { "type": "boolean", "description": "randomized on the device" } } },
          "Stats": { "type": "object", "properties": { "currentVersion": { "type": "string" }, "rrEpsilon": { "type": "number" },
              "versions": { "type": "array", "items": { "type": "object" } }, "rounds": { "type": "array", "items": { "type": "object" } } } },
          "NewRound": { "type": "object", "required": ["clipNorm", "granularity", "noiseStddev", "minCohort"], "properties": {
              "clipNorm": { "type": "number" }, "granularity": { "type": "number" }, "noiseStddev": { "type": "number" },
              "minCohort": { "type": "integer" }, "targetCount": { "type": "integer" }, "deadline": { "type": "integer", "description": "unix ms" },
              "durationSeconds": { "type": "number" }, "dimension": { "type": "integer" } } },
          "RoundChange": { "type": "object", "properties": { "minCohort": { "type": "integer" }, "targetCount": { "type": "integer" },
              "deadline": { "type": "integer" } } },
          "Rollback": { "type": "object", "required": ["version"], "properties": { "version": { "type": "string" } } },
          "AuditEntry": { "type": "object", "properties": { "id": { "type": "string" }, "at": { "type": "integer" },
              "adminFingerprint": { "type": "string" }, "action": { "type": "string" }, "details": { "type": "object" } } }
        }
      }
    })
}
