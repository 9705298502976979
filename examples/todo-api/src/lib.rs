//! A to-do list REST API: a router, JSON bodies and key-value storage.
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! wisp deploy todo-api --from examples/todo-api --route '/todos/*'
//! # or: cargo build --release --target wasm32-wasip2 -p todo-api
//! #     wisp deploy todo-api target/wasm32-wasip2/release/todo_api.wasm --route '/todos/*'
//! curl -d '{"title":"write docs"}' http://127.0.0.1:8080/todos
//! curl http://127.0.0.1:8080/todos
//! curl -X PUT -d '{"title":"write docs","done":true}' http://127.0.0.1:8080/todos/1
//! curl -X DELETE http://127.0.0.1:8080/todos/1
//! ```
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /todos` | `200`, every to-do, oldest first |
//! | `POST /todos` `{"title", "done"?}` | `201`, the new to-do, `location: /todos/ID` |
//! | `GET /todos/:id` | `200`, the to-do |
//! | `PUT /todos/:id` `{"title", "done"?}` | `200`, the replaced to-do |
//! | `DELETE /todos/:id` | `204` |
//!
//! An unknown id answers `404`, a body that is not a to-do `400`, both with
//! Wisp's JSON error body. Ids come from an atomic key-value counter, and
//! each to-do is stored as JSON under `todo:<id, zero-padded>` so that
//! listing the keys returns them in id order.

use serde::{Deserialize, Serialize};
use wisp_sdk::{Error, IntoResponse, Json, Path, Response, Router, StatusCode, kv, log};

#[wisp_sdk::handler]
fn app() -> Router {
    Router::new()
        .get("/todos", list)
        .post("/todos", create)
        .get("/todos/:id", show)
        .put("/todos/:id", replace)
        .delete("/todos/:id", remove)
}

/// A stored to-do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

/// The body of `POST` and `PUT`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TodoInput {
    title: String,
    #[serde(default)]
    done: bool,
}

const PREFIX: &str = "todo:";

fn key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

fn not_found(id: u64) -> Error {
    Error::not_found(format!("no to-do {id}"))
}

fn list() -> Result<Json<Vec<Todo>>, Error> {
    let mut todos = Vec::new();
    for key in kv::list_keys(PREFIX) {
        // A key deleted between the listing and the read is skipped.
        if let Some(todo) = kv::get_json::<Todo>(&key?)? {
            todos.push(todo);
        }
    }
    Ok(Json(todos))
}

fn create(Json(input): Json<TodoInput>) -> Result<Response, Error> {
    let id = kv::increment("next-id", 1)?;
    let id = u64::try_from(id).map_err(|_| Error::internal("the id counter is negative"))?;
    let todo = Todo {
        id,
        title: input.title,
        done: input.done,
    };
    kv::set_json(&key(id), &todo)?;
    log::info!("created to-do {id}");
    Ok((StatusCode::CREATED, Json(todo))
        .into_response()
        .with_header("location", format!("/todos/{id}")))
}

fn show(Path(id): Path<u64>) -> Result<Json<Todo>, Error> {
    kv::get_json(&key(id))?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

fn replace(Path(id): Path<u64>, Json(input): Json<TodoInput>) -> Result<Json<Todo>, Error> {
    let old = kv::get(&key(id))?.ok_or_else(|| not_found(id))?;
    let todo = Todo {
        id,
        title: input.title,
        done: input.done,
    };
    let new = serde_json::to_vec(&todo).map_err(|e| Error::internal(e.to_string()))?;
    // Only if nobody deleted or changed it meanwhile.
    if !kv::compare_and_swap(&key(id), Some(&old), new)? {
        return Err(Error::new(
            StatusCode::CONFLICT,
            format!("to-do {id} changed meanwhile; retry"),
        ));
    }
    Ok(Json(todo))
}

fn remove(Path(id): Path<u64>) -> Result<StatusCode, Error> {
    if kv::delete(&key(id))? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{Method, Request};

    use super::*;

    fn call(method: Method, uri: &str, body: &str) -> (u16, String) {
        let resp = app().handle(Request::new(method, uri).with_body(body));
        (resp.status(), String::from_utf8(resp.into_body()).unwrap())
    }

    #[test]
    fn crud() {
        wisp_sdk::testing::reset();
        assert_eq!(call(Method::GET, "/todos", ""), (200, "[]".into()));
        let (status, body) = call(Method::POST, "/todos", r#"{"title":"a"}"#);
        assert_eq!(
            (status, body.as_str()),
            (201, r#"{"id":1,"title":"a","done":false}"#)
        );
        call(Method::POST, "/todos", r#"{"title":"b","done":true}"#);
        let (_, body) = call(Method::GET, "/todos", "");
        assert_eq!(
            body,
            r#"[{"id":1,"title":"a","done":false},{"id":2,"title":"b","done":true}]"#
        );
        let (status, body) = call(Method::PUT, "/todos/1", r#"{"title":"a2","done":true}"#);
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"id":1,"title":"a2","done":true}"#)
        );
        assert_eq!(
            call(Method::GET, "/todos/1", "").1,
            r#"{"id":1,"title":"a2","done":true}"#
        );
        assert_eq!(call(Method::DELETE, "/todos/1", "").0, 204);
        assert_eq!(call(Method::DELETE, "/todos/1", "").0, 404);
        assert_eq!(call(Method::GET, "/todos/1", "").0, 404);
        assert_eq!(call(Method::PUT, "/todos/9", r#"{"title":"x"}"#).0, 404);
    }

    #[test]
    fn bad_requests() {
        wisp_sdk::testing::reset();
        let (status, body) = call(Method::POST, "/todos", "{");
        assert_eq!(status, 400);
        assert!(body.contains("invalid JSON body"), "{body}");
        assert_eq!(call(Method::POST, "/todos", r#"{"title":1}"#).0, 400);
        assert_eq!(call(Method::GET, "/todos/abc", "").0, 400);
        assert_eq!(call(Method::PATCH, "/todos/1", "").0, 405);
    }
}
