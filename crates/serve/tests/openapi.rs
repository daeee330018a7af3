//! The OpenAPI document against what the server answers: every operation
//! it lists is called, and each answer's status must be one the document
//! lists for it, with a body its schema accepts. A small validator of the
//! JSON Schema that utoipa writes (`$ref`, `type`, `properties`,
//! `required`, `items`, `oneOf`/`anyOf`/`allOf`, `enum`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::collections::BTreeSet;

use common::{ADMIN_KEY, Answer, CHECK_KEY, Running, forum, forum_check};
use serde_json::{Value, json};

/// Why `value` does not fit `schema`, if it does not.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    for (key, all) in [("oneOf", false), ("anyOf", false), ("allOf", true)] {
        if let Some(options) = schema[key].as_array() {
            let fits = options
                .iter()
                .filter(|s| check(doc, s, value, at).is_ok())
                .count();
            let ok = if all {
                fits == options.len()
            } else {
                fits >= 1
            };
            if !ok {
                return Err(format!("{at}: {value} fits {fits} of the {key} schemas"));
            }
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| fits_type(t, value)) {
        return Err(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Value::Object(object) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: `{name}` is required"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, field) in object {
                match properties.get(name) {
                    Some(property) => check(doc, property, field, &format!("{at}.{name}"))?,
                    None if schema["additionalProperties"] == json!(false) => {
                        return Err(format!("{at}: `{name}` is not in the schema"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Value::Array(items), Some(schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn fits_type(kind: &str, value: &Value) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// The document's operation for a request's method and concrete path.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<(String, &'a Value)> {
    let path = path.split('?').next().unwrap_or(path);
    let concrete: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let same = parts.len() == concrete.len()
                && parts.iter().zip(&concrete).all(|(t, c)| {
                    t == c
                    || (t.starts_with('{') && t.ends_with('}') && !c.is_empty())
                    // `/v1/tokens/{token}/timeline.html`
                    || (t.starts_with('{') && c.contains('.') && t.contains('.'))
                });
            let op = &item[method.to_lowercase()];
            (same && !op.is_null()).then(|| (format!("{method} {template}"), op))
        })
}

/// Checks `answer` to `method path` against the document; returns the
/// operation it belongs to.
fn conforms(doc: &Value, method: &str, path: &str, answer: &Answer) -> String {
    let (name, op) = operation(doc, method, path)
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    let status = answer.status.as_u16().to_string();
    let response = &op["responses"][&status];
    assert!(
        !response.is_null(),
        "{name} answered {status}, which the document does not list: {}",
        answer.text()
    );
    if let Some(schema) = response["content"]["application/json"].get("schema") {
        let body: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{name} {status}: not JSON ({e}): {}", answer.text()));
        if let Err(why) = check(doc, schema, &body, "body") {
            panic!("{name} {status}: {why}");
        }
    }
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let server = Running::start().await;
    let doc = server.get("/openapi.json", CHECK_KEY).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let forum = forum(&server).await;
    let workspace = common::id(
        &server
            .admin(
                "POST",
                "/v1/workspaces",
                json!({"company": forum.company, "name": "W", "actor": forum.ada}),
            )
            .await,
    );
    let token = &forum.token;
    let bob = &forum.bob;
    let company = &forum.company;
    let ada = &forum.ada;
    let evaluation = json!({
        "subject": {"type": "token", "properties": {"secret": forum.secret}},
        "action": {"name": "conversations:read"},
        "resource": {"type": "conversation", "id": "cnv_1",
                     "properties": {"namespace": "private", "owner": bob}},
    });
    let calls: Vec<(&str, String, Option<&str>, Option<Value>)> = vec![
        ("GET", "/healthz".into(), None, None),
        ("GET", "/readyz".into(), None, None),
        ("GET", "/metrics".into(), Some(CHECK_KEY), None),
        ("GET", "/metrics".into(), None, None),
        ("GET", "/openapi.json".into(), Some(CHECK_KEY), None),
        (
            "POST",
            "/v1/check".into(),
            Some(CHECK_KEY),
            Some(forum_check(&forum)),
        ),
        (
            "POST",
            "/v1/check".into(),
            Some(CHECK_KEY),
            Some(json!({"secret": "x"})),
        ),
        (
            "GET",
            "/.well-known/authzen-configuration".into(),
            Some(CHECK_KEY),
            None,
        ),
        (
            "POST",
            "/access/v1/evaluation".into(),
            Some(CHECK_KEY),
            Some(evaluation.clone()),
        ),
        (
            "POST",
            "/access/v1/evaluations".into(),
            Some(CHECK_KEY),
            Some(json!({"evaluations": [evaluation]})),
        ),
        (
            "POST",
            "/v1/companies".into(),
            Some(ADMIN_KEY),
            Some(json!({"name": "Other"})),
        ),
        (
            "POST",
            "/v1/companies".into(),
            Some(CHECK_KEY),
            Some(json!({"name": "Other"})),
        ),
        (
            "POST",
            "/v1/teammates".into(),
            Some(ADMIN_KEY),
            Some(json!({"company": company, "name": "Carl", "actor": ada})),
        ),
        (
            "PUT",
            format!("/v1/teammates/{bob}/role"),
            Some(ADMIN_KEY),
            Some(json!({"role": "admin", "actor": ada})),
        ),
        (
            "PUT",
            format!("/v1/teammates/{bob}/role"),
            Some(ADMIN_KEY),
            Some(json!({"role": "admin", "actor": ada})),
        ),
        (
            "PUT",
            format!("/v1/teammates/{bob}/private-api-access"),
            Some(ADMIN_KEY),
            Some(json!({"allowed": true, "actor": bob})),
        ),
        (
            "PUT",
            format!("/v1/companies/{company}/private-api-access"),
            Some(ADMIN_KEY),
            Some(json!({"allowed": true, "actor": ada})),
        ),
        (
            "POST",
            "/v1/workspaces".into(),
            Some(ADMIN_KEY),
            Some(json!({"company": company, "name": "V", "actor": ada})),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(ADMIN_KEY),
            Some(
                json!({"company": company, "name": "T", "actor": ada, "features": ["resources"], "shared": [workspace], "scopes": ["tags:read"]}),
            ),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(ADMIN_KEY),
            Some(json!({"company": company, "name": "T", "actor": ada, "scopes": ["bad"]})),
        ),
        (
            "POST",
            format!("/v1/tokens/{token}/reveal"),
            Some(ADMIN_KEY),
            Some(json!({"actor": ada})),
        ),
        (
            "GET",
            format!("/v1/companies/{company}/tokens"),
            Some(ADMIN_KEY),
            None,
        ),
        ("GET", format!("/v1/tokens/{token}"), Some(ADMIN_KEY), None),
        (
            "GET",
            "/v1/tokens/tok_00000000000000000000000000000000".into(),
            Some(ADMIN_KEY),
            None,
        ),
        (
            "GET",
            format!("/v1/tokens/{token}/timeline"),
            Some(ADMIN_KEY),
            None,
        ),
        (
            "GET",
            format!("/v1/tokens/{token}/timeline.html"),
            Some(ADMIN_KEY),
            None,
        ),
        ("GET", "/v1/history?limit=2".into(), Some(ADMIN_KEY), None),
        (
            "GET",
            format!("/v1/who-can?scope=conversations:read&private={bob}"),
            Some(ADMIN_KEY),
            None,
        ),
        ("GET", "/v1/verify".into(), Some(ADMIN_KEY), None),
        ("GET", "/v1/export".into(), Some(ADMIN_KEY), None),
        (
            "DELETE",
            format!("/v1/tokens/{token}?actor={ada}"),
            Some(ADMIN_KEY),
            None,
        ),
        (
            "POST",
            format!("/v1/teammates/{bob}/deactivate"),
            Some(ADMIN_KEY),
            Some(json!({"actor": ada})),
        ),
    ];
    let mut called = BTreeSet::new();
    for (method, path, key, body) in calls {
        let answer = server
            .api
            .send(method, &path, key, &[], body.as_ref())
            .await
            .unwrap();
        called.insert(conforms(&doc, method, &path, &answer));
    }
    let listed: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    assert_eq!(called, listed, "every documented operation was called");
}

#[test]
fn the_validator_refuses_what_does_not_fit() {
    let doc = serde_json::to_value(tokenledger_serve::openapi()).unwrap();
    let answer = json!({"$ref": "#/components/schemas/CheckAnswer"});
    let good = json!({"allowed": true, "status": 200, "token": null, "rule": null, "rule_number": null,
                      "needed_scope": "tags:read", "error": null, "explanation": null, "position": 3});
    assert!(check(&doc, &answer, &good, "body").is_ok());
    let mut bad = good.clone();
    bad["allowed"] = json!("yes");
    assert!(check(&doc, &answer, &bad, "body").is_err());
    bad = good.clone();
    bad.as_object_mut().unwrap().remove("position");
    assert!(check(&doc, &answer, &bad, "body").is_err());
}
