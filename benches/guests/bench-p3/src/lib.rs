//! The WASI 0.3 guest of the load benchmark: answers
//! `hello from wisp at <path>` as `text/plain; charset=utf-8` with its
//! `content-length`, the bytes and headers the 0.2 hello guest and
//! native-hello answer, from a component exporting
//! `wasi:http/handler@0.3` (the `wasip3` crate, no SDK).

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let pq = request.get_path_with_query().unwrap_or_default();
        let path = pq.split('?').next().unwrap_or_default();
        let body = format!("hello from wisp at {path}").into_bytes();
        let headers = Fields::from_list(&[
            ("content-type".into(), b"text/plain; charset=utf-8".to_vec()),
            ("content-length".into(), body.len().to_string().into_bytes()),
        ])
        .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
        let (mut tx, rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
        drop(trailers_tx);
        wasip3::spawn_local(async move {
            tx.write_all(body).await;
        });
        Ok(response)
    }
}
