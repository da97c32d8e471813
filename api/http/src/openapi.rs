//! The OpenAPI 3.1 document, generated from the route table: every entry's method, path,
//! query parameters (`IntoParams`), body and answer (`ToSchema`) come from the Rust types the
//! handlers parse and return, so the router, the document and the request checks
//! (`problem::JsonBody`, `problem::Query`) share one source.

use serde_json::{Map, Value, json};

use crate::table::{H, Reply, RouteDoc, Schemas};

/// The problem+json schema every error answer uses (RFC 9457 plus `field`).
fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details; `field` names the offending input; 409s carry `allowed` (legal transitions) or stock figures",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "field": {"type": "string"},
            "resource": {"type": "string"},
            "id": {"type": "string"},
            "allowed": {"type": "array", "items": {"type": "string"}},
        },
    })
}

/// The error answers a route really gives, with what causes each.
fn errors(doc: &RouteDoc, has_query: bool) -> Vec<(u16, &'static str)> {
    let has_path = doc.path.contains('{');
    let write = doc.method != "GET";
    let mut out = Vec::new();
    if has_query || has_path || doc.body.is_some() {
        out.push((400, "malformed request: invalid JSON or a query parameter out of its schema (`field` names it)"));
    }
    if doc.auth {
        out.push((401, "no or an unknown API key"));
        out.push((403, "the key's role may not do this"));
    }
    if has_path || doc.body.is_some() || doc.also.contains(&404) {
        out.push((
            404,
            "the resource (or, in a query, the group) does not exist or is not visible to this key",
        ));
    }
    if write {
        out.push((409, "conflicts with the current state: a duplicate id, an illegal transition (`allowed`), not enough stock, or an id in the body (`field`) that does not exist"));
    }
    if doc.body.is_some() {
        out.push((413, "the body is larger than the limit"));
        out.push((
            422,
            "the body does not match its schema or a rule of the domain (`field` names it)",
        ));
    }
    if doc.auth {
        out.push((429, "too many failed authentications from this client"));
    }
    out
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The document for `table`.
pub(crate) fn document(table: &[(RouteDoc, H)]) -> Value {
    let mut paths = Map::new();
    let mut collected = Schemas::new();
    for (doc, _) in table {
        let mut parameters: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"}})
            })
            .collect();
        let query = (doc.query)();
        let has_query = !query.is_empty();
        parameters.extend(query.iter().map(to_value));

        let mut responses = Map::new();
        let content = match doc.reply {
            Reply::Json(schema) => {
                json!({"application/json": {"schema": to_value(&schema(&mut collected))}})
            }
            Reply::Telemetry(schema) => json!({
                "application/json": {"schema": to_value(&schema(&mut collected))},
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            }),
        };
        responses.insert(
            doc.ok.to_string(),
            json!({"description": "success", "content": content}),
        );
        for (status, description) in errors(doc, has_query) {
            responses.insert(
                status.to_string(),
                json!({"description": description,
                       "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
            );
        }
        let mut op = json!({
            "summary": doc.summary,
            "operationId": operation_id(doc.method, doc.path),
            "tags": [doc.tag],
            "parameters": parameters,
            "responses": responses,
            "security": if doc.auth { json!([{"bearer": []}]) } else { json!([]) },
        });
        if let (Some(body), Some(obj)) = (doc.body, op.as_object_mut()) {
            let schema = to_value(&body(&mut collected));
            obj.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema}}}),
            );
        }
        let entry = paths
            .entry(doc.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(doc.method.to_ascii_lowercase(), op);
        }
    }
    let mut schemas = Map::new();
    schemas.insert("Problem".into(), problem_schema());
    for (name, schema) in collected {
        schemas.insert(name, to_value(&schema));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Prognos service API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Predictive maintenance service operations: tickets, SLA, dispatch, parts, providers, analytics. Authenticate with `Authorization: Bearer <API key>`; errors are application/problem+json naming the field. Bodies and query parameters are checked against the schemas below before anything runs.",
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
