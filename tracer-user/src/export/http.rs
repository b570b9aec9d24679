//! The HTTP side of `tracer serve`: `/metrics` (Prometheus text format),
//! `/healthz`, and an index at `/`. Connections are served by hyper on the
//! session's runtime; a scrape asks the session loop, which owns the
//! aggregates, for the exposition and waits for its answer.

use std::{convert::Infallible, net::SocketAddr};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

/// A scrape waiting for the exposition text.
pub type ScrapeRequest = oneshot::Sender<String>;

/// The exposition format's content type (text format 0.0.4).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the listener now, so that a port in use is an error before any
/// probe is attached.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    // A port in use or an address not ours is bad input: exit code 2.
    TcpListener::bind(addr).await.map_err(|e| {
        crate::error::UsageError(format!(
            "cannot listen on {addr}: {e} (is another exporter on that port? pick one with --listen)"
        ))
        .into()
    })
}

/// Accepts connections until the session ends (the runtime stops).
pub fn spawn(listener: TcpListener, scrapes: mpsc::Sender<ScrapeRequest>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let scrapes = scrapes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, scrapes.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    log::debug!("HTTP connection: {e}");
                }
            });
        }
    });
}

async fn handle(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<ScrapeRequest>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::from_static(b"only GET\n")))
            .expect("static response"));
    }
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            let text = match scrapes.send(tx).await {
                Ok(()) => rx.await.ok(),
                Err(_) => None,
            };
            match text {
                Some(text) => (StatusCode::OK, TEXT_FORMAT, text),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "tracing has ended\n".to_string(),
                ),
            }
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/" => (
            StatusCode::OK,
            "text/html",
            "<html><body><h1>tracer</h1><p><a href=\"/metrics\">/metrics</a> \
             (Prometheus), <a href=\"/healthz\">/healthz</a></p></body></html>\n"
                .to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response"))
}
