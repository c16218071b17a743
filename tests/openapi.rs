//! `GET /v1/openapi.json` on a real cluster: it is the embedded document, it is a valid
//! OpenAPI 3.1 document (`openapi-spec-validator`), and live answers of the nodes
//! (success bodies and problems) are instances of the schemas it gives them.

mod common;

use common::TestCluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Validates the document, then each `[schema, instance]` against the document's schema
/// (JSON Schema 2020-12, as OpenAPI 3.1 uses); prints the number checked.
const CHECK: &str = r##"
import json, sys
from openapi_spec_validator import validate
from jsonschema import Draft202012Validator
given = json.load(sys.stdin)
doc = given["doc"]
validate(doc)
for name, instance in given["samples"]:
    schema = {"$ref": "#/components/schemas/" + name, "components": doc["components"]}
    errors = list(Draft202012Validator(schema).iter_errors(instance))
    assert not errors, (name, instance, [e.message for e in errors])
print(len(given["samples"]))
"##;

#[tokio::test]
async fn the_served_document_is_valid_openapi_and_live_answers_match_it() {
    let c = TestCluster::start().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let resp = c
        .http
        .get(format!("http://{}/v1/openapi.json", c.api(follower)))
        .send()
        .await
        .expect("get the document");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("body");
    assert_eq!(text, baton::api::openapi::DOCUMENT);
    let doc: Value = serde_json::from_str(&text).expect("JSON");

    let mut samples = Vec::new();
    let (st, lease) = c.acquire(follower, "oa:k", "one", 30_000).await;
    assert_eq!(st, StatusCode::OK);
    samples.push(json!(["Lease", lease]));
    let (st, held) = c.acquire(follower, "oa:k", "two", 30_000).await;
    assert_eq!(st, StatusCode::CONFLICT);
    samples.push(json!(["Problem", held]));
    let (_, info) = c
        .call_retry(follower, Method::GET, "/v1/locks/oa:k?waiters=true", None)
        .await;
    samples.push(json!(["LockInfo", info]));
    let (_, page) = c
        .call_retry(follower, Method::GET, "/v1/locks?prefix=oa:", None)
        .await;
    samples.push(json!(["LockPage", page]));
    let (_, valid) = c
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/oa:k/validate",
            Some(json!({"token": lease["token"]})),
        )
        .await;
    samples.push(json!(["Validation", valid]));
    let (_, released) = c
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/oa:k/release",
            Some(json!({"owner": "one"})),
        )
        .await;
    samples.push(json!(["Released", released]));
    let (_, missing) = c
        .call_retry(follower, Method::GET, "/v1/locks/oa:k", None)
        .await;
    samples.push(json!(["Problem", missing]));
    let (_, snap) = c
        .call_retry(leader, Method::POST, "/v1/cluster/snapshot", None)
        .await;
    samples.push(json!(["SnapshotTaken", snap]));
    for id in c.running_ids() {
        samples.push(json!([
            "ClusterView",
            c.cluster_view(id).await.expect("a view")
        ]));
        let (_, ready) = c.call(id, Method::GET, "/readyz", None).await;
        samples.push(json!(["Readiness", ready]));
        let (_, health) = c.call(id, Method::GET, "/healthz", None).await;
        samples.push(json!(["Health", health]));
    }
    let n = samples.len();
    let input = serde_json::to_vec(&json!({"doc": doc, "samples": samples})).expect("JSON");
    let out = common::python::run(CHECK, &input);
    assert_eq!(out.trim(), n.to_string());
}
