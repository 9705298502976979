//! Orders taken over HTTP and recorded by an event handler: one component
//! with both a `#[wisp_sdk::handler]` (HTTP) and a
//! `#[wisp_sdk::event_handler]` (events).
//!
//! Build, deploy and subscribe it (from the workspace root, with
//! `wisp serve` running):
//!
//! ```text
//! wisp deploy order-events --from examples/order-events --route '/orders/*'
//! # or: cargo build --release --target wasm32-wasip2 -p order-events
//! #     wisp deploy order-events target/wasm32-wasip2/release/order_events.wasm --route '/orders/*'
//! wisp subscribe order-events orders
//! curl -d '{"item":"tea","quantity":2}' http://127.0.0.1:8080/orders   # 202 {"event_id":"..."}
//! curl http://127.0.0.1:8080/orders                                     # {"count":1,"ids":["..."]}
//! curl http://127.0.0.1:8080/orders/EVENT_ID
//! ```
//!
//! | request | answer |
//! |---------|--------|
//! | `POST /orders` `{"item", "quantity"}` | `202 {"event_id"}`, the order published on topic `orders`, `location: /orders/EVENT_ID` |
//! | `GET /orders` | `200 {"count", "ids"}`, the recorded orders' ids, oldest first |
//! | `GET /orders/:id` | `200`, the recorded order; `404` until the handler has recorded it |
//!
//! A bad order (not JSON, an empty `item`, a `quantity` outside 1..=1000,
//! an unknown field) answers `400` with code `invalid_order` and publishes
//! nothing.
//!
//! The event handler receives every event on `orders` (the host calls the
//! typed export, not `POST /`). Delivery is at least once, so recording is
//! idempotent: the order is stored under `order:<event id>` only if that
//! key is not set yet (`compare_and_swap`), and the `orders-recorded`
//! counter is incremented only by the call that stored it. An event that is
//! not a valid order (published by hand with `wisp publish orders ...`)
//! fails, is retried, and ends in the dead-letter list
//! (`wisp events dlq order-events`).

use serde::{Deserialize, Serialize};
use wisp_sdk::{
    Error, Event, IntoResponse, Json, Path, Response, Router, StatusCode, events, kv, log,
};

/// The topic orders are published on.
pub const TOPIC: &str = "orders";
/// Recorded orders are stored under `order:<event id>`.
const PREFIX: &str = "order:";
/// How many orders the handler has recorded.
const COUNT: &str = "orders-recorded";
/// Bounds of `quantity`.
const QUANTITY: std::ops::RangeInclusive<i64> = 1..=1000;
/// Longest `item`, in characters.
const ITEM_MAX: usize = 200;

#[wisp_sdk::handler]
fn app() -> Router {
    Router::new()
        .post("/orders", create)
        .get("/orders", list)
        .get("/orders/:id", show)
}

/// An order, as posted and as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// What was ordered.
    pub item: String,
    /// How many (1 to 1000).
    pub quantity: i64,
}

/// An order as the event handler recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// The event's id: the order's id.
    pub id: String,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: i64,
    /// When the order was published, in ms since the Unix epoch.
    pub published_ms: u64,
    /// The delivery attempt that recorded it (1 unless an earlier one failed).
    pub attempt: u32,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request(message).with_code("invalid_order")
}

/// Parses and checks an order; every problem is a `400 invalid_order`.
pub fn parse_order(body: &[u8]) -> Result<Order, Error> {
    if body.is_empty() {
        return Err(invalid(
            r#"the body is empty; send an order like {"item":"tea","quantity":2}"#,
        ));
    }
    let order: Order = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not an order: {e}")))?;
    validate(&order)?;
    Ok(order)
}

/// The rules an order follows, checked on `POST` and again on delivery
/// (anyone with the admin token can publish on the topic).
pub fn validate(order: &Order) -> Result<(), Error> {
    if order.item.trim().is_empty() {
        return Err(invalid("`item` must not be empty"));
    }
    if order.item.chars().count() > ITEM_MAX {
        return Err(invalid(format!(
            "`item` is longer than {ITEM_MAX} characters"
        )));
    }
    if !QUANTITY.contains(&order.quantity) {
        return Err(invalid(format!(
            "`quantity` must be between {} and {} (got {})",
            QUANTITY.start(),
            QUANTITY.end(),
            order.quantity
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct Accepted {
    event_id: String,
}

/// `POST /orders`: validates, publishes, answers `202` with the event id.
fn create(body: Vec<u8>) -> Result<Response, Error> {
    let order = parse_order(&body)?;
    let event_id = events::publish_json(TOPIC, &order)?;
    log::info!(
        "published order {event_id}: {} x {}",
        order.quantity,
        order.item
    );
    let location = format!("/orders/{event_id}");
    Ok((StatusCode::ACCEPTED, Json(Accepted { event_id }))
        .into_response()
        .with_header("location", location))
}

#[derive(Serialize)]
struct Listing {
    count: i64,
    ids: Vec<String>,
}

/// `GET /orders`: the recorded orders' ids (event ids grow with time, so
/// key order is publication order).
fn list() -> Result<Json<Listing>, Error> {
    let ids = kv::list_keys(PREFIX)
        .map(|key| key.map(|k| k[PREFIX.len()..].to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let count = match kv::get_string(COUNT)? {
        Some(n) => n
            .parse()
            .map_err(|_| Error::internal("the order counter is not a number"))?,
        None => 0,
    };
    Ok(Json(Listing { count, ids }))
}

/// `GET /orders/:id`: the recorded order.
fn show(Path(id): Path<String>) -> Result<Json<Recorded>, Error> {
    kv::get_json(&format!("{PREFIX}{id}"))?
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("order {id} is not recorded (yet)")))
}

/// Every event delivered to this function. Orders on `orders` are recorded;
/// events from elsewhere (`wisp invoke order-events --async`, another
/// topic) are logged and acknowledged.
#[wisp_sdk::event_handler]
fn on_event(event: Event) -> Result<(), Error> {
    if event.topic != TOPIC {
        log::warn!(
            "ignored event {} on {}: not an order",
            event.id,
            event.topic
        );
        return Ok(());
    }
    let recorded = record(&event)?;
    log::info!(
        "{} order {} (attempt {})",
        if recorded { "recorded" } else { "already had" },
        event.id,
        event.attempt
    );
    Ok(())
}

/// Records the order `event` carries; `false` if it was recorded already
/// (a redelivery). An invalid order is an error: retried, then
/// dead-lettered, where an operator sees it.
pub fn record(event: &Event) -> Result<bool, Error> {
    let order: Order = event.json()?;
    validate(&order)?;
    let entry = Recorded {
        id: event.id.clone(),
        item: order.item,
        quantity: order.quantity,
        published_ms: event.time_ms,
        attempt: event.attempt,
    };
    let value = serde_json::to_vec(&entry).map_err(|e| Error::internal(e.to_string()))?;
    // Only the first delivery to get here stores the order and counts it.
    // (Were the host to stop between the two calls, the redelivery would
    // find the order stored and not count it: the count can only fall
    // short, never count an order twice.)
    if !kv::compare_and_swap(&format!("{PREFIX}{}", event.id), None, value)? {
        return Ok(false);
    }
    kv::increment(COUNT, 1)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{Method, Request, testing};

    use super::*;

    fn call(method: Method, uri: &str, body: &str) -> (u16, serde_json::Value) {
        let resp = app().handle(Request::new(method, uri).with_body(body));
        let status = resp.status();
        (status, serde_json::from_slice(resp.body()).unwrap())
    }

    fn event(id: &str, payload: &str) -> Event {
        let mut e = Event::new(TOPIC, payload.as_bytes().to_vec());
        e.id = id.into();
        e
    }

    #[test]
    fn orders_are_checked() {
        assert_eq!(
            parse_order(br#"{"item":"tea","quantity":2}"#).unwrap(),
            Order {
                item: "tea".into(),
                quantity: 2
            }
        );
        for (body, says) in [
            ("", "empty"),
            ("{", "not an order"),
            (r#"{"quantity":2}"#, "missing field `item`"),
            (r#"{"item":"  ","quantity":2}"#, "`item` must not be empty"),
            (
                r#"{"item":"tea","quantity":0}"#,
                "between 1 and 1000 (got 0)",
            ),
            (r#"{"item":"tea","quantity":1001}"#, "(got 1001)"),
            (r#"{"item":"tea","quantity":"2"}"#, "not an order"),
            (r#"{"item":"tea","quantity":2,"x":1}"#, "unknown field `x`"),
        ] {
            let e = parse_order(body.as_bytes()).unwrap_err();
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (400, "invalid_order"),
                "{body}"
            );
            assert!(e.message().contains(says), "{body}: {}", e.message());
        }
        let long = format!(r#"{{"item":"{}","quantity":1}}"#, "x".repeat(201));
        assert!(parse_order(long.as_bytes()).is_err());
    }

    #[test]
    fn post_publishes_a_valid_order_only() {
        testing::reset();
        let (status, body) = call(Method::POST, "/orders", r#"{"item":"tea","quantity":2}"#);
        assert_eq!(status, 202, "{body}");
        assert!(!body["event_id"].as_str().unwrap().is_empty());
        let (status, body) = call(Method::POST, "/orders", r#"{"item":"","quantity":2}"#);
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_order");
        assert_eq!(
            testing::published(),
            [(
                TOPIC.to_string(),
                br#"{"item":"tea","quantity":2}"#.to_vec()
            )]
        );
    }

    #[test]
    fn the_handler_records_each_order_once() {
        testing::reset();
        assert_eq!(call(Method::GET, "/orders/e1", "").0, 404);
        let first = event("e1", r#"{"item":"tea","quantity":2}"#);
        on_event(first.clone()).unwrap();
        // A redelivery (a later attempt of the same event) changes nothing.
        let mut again = first;
        again.attempt = 2;
        assert!(!record(&again).unwrap());
        on_event(event("e2", r#"{"item":"cake","quantity":1}"#)).unwrap();

        let (status, body) = call(Method::GET, "/orders/e1", "");
        assert_eq!(status, 200);
        assert_eq!(
            (
                &body["id"],
                &body["item"],
                &body["quantity"],
                &body["attempt"]
            ),
            (&"e1".into(), &"tea".into(), &2.into(), &1.into())
        );
        let (_, body) = call(Method::GET, "/orders", "");
        assert_eq!(body, serde_json::json!({"count": 2, "ids": ["e1", "e2"]}));
    }

    #[test]
    fn bad_events_fail_and_other_topics_are_ignored() {
        testing::reset();
        let e = on_event(event("e1", r#"{"item":"tea","quantity":0}"#)).unwrap_err();
        assert_eq!(e.code(), "invalid_order");
        assert!(on_event(event("e2", "not json")).is_err());
        on_event(Event::new("invoke:order-events", b"hi".to_vec())).unwrap();
        assert_eq!(call(Method::GET, "/orders", "").1["count"], 0);
    }
}
