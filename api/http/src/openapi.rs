//! The OpenAPI 3.0 document, generated from the route table (no annotation framework: the
//! table the router is built from is the single source of truth).

use serde_json::{Map, Value, json};

use crate::routes::schema;
use crate::table::{H, RouteDoc};

/// The document for `table`.
pub(crate) fn document(table: &[(RouteDoc, H)]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Problem".into(), schema("Problem"));
    for (doc, _) in table {
        let mut parameters: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(doc.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": "string"}})
        }));
        let problem = json!({"description": "problem details",
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        let mut responses = Map::new();
        responses.insert(
            doc.ok.to_string(),
            json!({"description": "success", "content": {"application/json": {"schema": {}}}}),
        );
        responses.insert("default".into(), problem);
        let mut op = json!({
            "summary": doc.summary,
            "operationId": operation_id(doc.method, doc.path),
            "tags": [doc.tag],
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(obj) = op.as_object_mut() {
            if let Some(body) = doc.body {
                schemas.insert(body.into(), schema(body));
                obj.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {
                        "schema": {"$ref": format!("#/components/schemas/{body}")}}}}),
                );
            }
            obj.insert(
                "security".into(),
                if doc.auth {
                    json!([{"bearer": []}])
                } else {
                    json!([])
                },
            );
        }
        let entry = paths
            .entry(doc.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(doc.method.to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Prognos service API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Predictive maintenance service operations: tickets, SLA, dispatch, parts, providers. Authenticate with `Authorization: Bearer <API key>`; errors are application/problem+json naming the field.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for seg in path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.push_str(&seg.replace(['.', '-'], "_"));
    }
    id
}
