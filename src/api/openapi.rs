//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the v1 API (`openapi.json` beside
//! this file, embedded in the binary and served as is).
//!
//! The document is written by hand and held to the code by the tests below, which fail
//! on any drift: every route and method of [`super::router`] (read from its source) is
//! documented and nothing else is; the `ErrorCode` enum is exactly
//! [`crate::wire::ErrorCode::ALL`]; every schema of a wire type has an example that deserializes into
//! that type (unknown fields refused where the type refuses them) and serializes back to
//! fields the schema lists, with the schema's required fields present; every request
//! example of an operation deserializes into its request type; and the enums' values are
//! the wire enums' values. `tests/openapi.rs` validates the served document with
//! `openapi-spec-validator`.
//!
//! Access: open, like `/healthz` (the contract holds no data).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /v1/openapi.json`.
pub async fn document() -> Response {
    let mut resp = DOCUMENT.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::Value;

    use super::DOCUMENT;
    use crate::wire::{self, ErrorCode};

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// `(METHOD, path)` of every `.route("path", method(...))` in `source`.
    fn routes_in(source: &str) -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for rest in source.split(".route(").skip(1) {
            let Some(start) = rest.find('"') else {
                continue;
            };
            if rest[..start].contains(')') {
                continue;
            }
            let lit = &rest[start + 1..];
            let Some(end) = lit.find('"') else { continue };
            let path = &lit[..end];
            let after = lit[end + 1..].trim_start_matches([',', ' ', '\n']);
            let method = after.split('(').next().unwrap_or_default().trim();
            found.insert((method.to_ascii_uppercase(), path.to_string()));
        }
        found
    }

    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let code = routes_in(include_str!("mod.rs"));
        assert!(code.len() >= 15, "{code:?}");
        let doc = doc();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        assert_eq!(code, documented);
    }

    #[test]
    fn the_error_code_enum_is_every_code_a_node_sends() {
        let doc = doc();
        let listed: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|v| v.as_str().expect("a string"))
            .collect();
        let sent: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, sent);
        let described = doc["components"]["schemas"]["ErrorCode"]["description"]
            .as_str()
            .expect("a description");
        for c in ErrorCode::ALL {
            assert!(described.contains(c.as_str()), "{c} has no status");
        }
    }

    /// Checks the schema's examples against `T`: each deserializes, and serializes
    /// back to listed properties with the required ones present.
    fn holds<T: DeserializeOwned + Serialize>(name: &str) {
        let doc = doc();
        let schema = &doc["components"]["schemas"][name];
        let props: BTreeSet<&String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has properties"))
            .keys()
            .collect();
        let examples = schema["examples"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has examples"));
        assert!(!examples.is_empty(), "{name}");
        for ex in examples {
            let typed: T = serde_json::from_value(ex.clone())
                .unwrap_or_else(|e| panic!("{name} example {ex} does not deserialize: {e}"));
            let back = serde_json::to_value(&typed).expect("serializes");
            let keys: BTreeSet<&String> = back.as_object().expect("an object").keys().collect();
            for k in &keys {
                assert!(props.contains(k), "{name}: field {k} is not documented");
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().expect("a name").to_string();
                assert!(keys.contains(&r), "{name}: required {r} is not sent");
            }
        }
    }

    #[test]
    fn every_wire_schema_has_examples_that_are_its_rust_type() {
        holds::<wire::AcquireRequest>("AcquireRequest");
        holds::<wire::RenewRequest>("RenewRequest");
        holds::<wire::ReleaseRequest>("ReleaseRequest");
        holds::<wire::ValidateRequest>("ValidateRequest");
        holds::<wire::CancelRequest>("CancelRequest");
        holds::<wire::Lease>("Lease");
        holds::<wire::WaiterInfo>("WaiterInfo");
        holds::<wire::LockInfo>("LockInfo");
        holds::<wire::LockPage>("LockPage");
        holds::<wire::Released>("Released");
        holds::<wire::Validation>("Validation");
        holds::<wire::Cancelled>("Cancelled");
        holds::<wire::LockEvent>("LockEvent");
        holds::<wire::StreamReset>("StreamReset");
        holds::<wire::MemberView>("MemberView");
        holds::<wire::QuorumView>("QuorumView");
        holds::<wire::PeerView>("PeerView");
        holds::<wire::ClusterView>("ClusterView");
        holds::<wire::MembershipChangeView>("MembershipChangeView");
        holds::<wire::AddNodeRequest>("AddNodeRequest");
        holds::<wire::MembershipAnswer>("MembershipAnswer");
        holds::<wire::Health>("Health");
        holds::<wire::Readiness>("Readiness");
        holds::<wire::Problem>("Problem");
    }

    #[test]
    fn every_request_example_of_an_operation_is_its_request_type() {
        let doc = doc();
        let mut checked = 0;
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let Some(example) = op.pointer("/requestBody/content/application~1json/example")
                else {
                    continue;
                };
                let schema = op
                    .pointer("/requestBody/content/application~1json/schema/$ref")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ex = example.clone();
                let ok = match schema {
                    "#/components/schemas/AcquireRequest" => {
                        serde_json::from_value::<wire::AcquireRequest>(ex).map(drop)
                    }
                    "#/components/schemas/RenewRequest" => {
                        serde_json::from_value::<wire::RenewRequest>(ex).map(drop)
                    }
                    "#/components/schemas/ReleaseRequest" => {
                        serde_json::from_value::<wire::ReleaseRequest>(ex).map(drop)
                    }
                    "#/components/schemas/ValidateRequest" => {
                        serde_json::from_value::<wire::ValidateRequest>(ex).map(drop)
                    }
                    "#/components/schemas/CancelRequest" => {
                        serde_json::from_value::<wire::CancelRequest>(ex).map(drop)
                    }
                    "#/components/schemas/AddNodeRequest" => {
                        serde_json::from_value::<wire::AddNodeRequest>(ex).map(drop)
                    }
                    other => panic!("{method} {path}: no Rust type for {other}"),
                };
                ok.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }

    /// The values of the schema enum at `pointer`, each deserialized into `T`, and the
    /// number of them.
    fn enum_is<T: DeserializeOwned>(pointer: &str, variants: usize) {
        let doc = doc();
        let values = doc
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("an enum at {pointer}"));
        assert_eq!(values.len(), variants, "{pointer}");
        for v in values {
            serde_json::from_value::<T>(v.clone())
                .unwrap_or_else(|e| panic!("{pointer}: {v} is not a value: {e}"));
        }
    }

    #[test]
    fn enums_are_the_wire_enums() {
        enum_is::<wire::CancelReason>(
            "/components/schemas/CancelRequest/properties/reason/enum",
            2,
        );
        enum_is::<wire::NotReleased>("/components/schemas/Released/properties/reason/enum", 2);
        enum_is::<wire::EventKind>("/components/schemas/LockEvent/properties/event/enum", 8);
        enum_is::<wire::Role>("/components/schemas/ClusterView/properties/state/enum", 5);
        enum_is::<wire::Consistency>("/components/parameters/Consistency/schema/enum", 2);
    }

    /// Checks that each property of request schema `name` is nullable in the document
    /// exactly when `T` takes `null` for it (serde reads `null` as absent for an
    /// `Option`). Found by schemathesis: `"wait_ms": null` was accepted, undocumented.
    fn nulls_as_documented<T: DeserializeOwned>(name: &str) {
        let doc = doc();
        let schema = &doc["components"]["schemas"][name];
        let example = schema["examples"][0].clone();
        for (field, prop) in schema["properties"].as_object().expect("properties") {
            let mut body = example.clone();
            body[field.as_str()] = serde_json::Value::Null;
            let takes_null = serde_json::from_value::<T>(body).is_ok();
            let types = &prop["type"];
            let documented = types == "null"
                || types
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "null"));
            assert_eq!(
                documented, takes_null,
                "{name}.{field}: null is accepted {takes_null}, documented {documented}"
            );
        }
    }

    #[test]
    fn request_fields_are_nullable_in_the_document_exactly_when_the_server_takes_null() {
        nulls_as_documented::<wire::AcquireRequest>("AcquireRequest");
        nulls_as_documented::<wire::RenewRequest>("RenewRequest");
        nulls_as_documented::<wire::ReleaseRequest>("ReleaseRequest");
        nulls_as_documented::<wire::ValidateRequest>("ValidateRequest");
        nulls_as_documented::<wire::CancelRequest>("CancelRequest");
    }
}
