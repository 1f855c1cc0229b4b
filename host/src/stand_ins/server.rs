//! The HTTP server under each stand-in: axum on a loopback listener, every request
//! recorded (and printed for the demo) before the stand-in answers it.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A request a stand-in received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running server; stops when dropped.
pub(super) struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Every request received so far.
    pub fn received(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves on `addr` (port 0: any free port); `answer` gives each request's status
/// and JSON body. With `print`, each request and answer is printed as `<name> ...`.
pub(super) async fn serve<F, Fut>(
    addr: SocketAddr,
    name: &'static str,
    print: bool,
    answer: F,
) -> std::io::Result<Server>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (u16, Value)> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (answer, recorded) = (answer.clone(), recorded.clone());
        async move {
            let request = Request {
                method: method.to_string(),
                path: uri
                    .path_and_query()
                    .map_or_else(|| uri.path().to_string(), |p| p.to_string()),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect(),
                body: body.to_vec(),
            };
            recorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request.clone());
            let shown = String::from_utf8_lossy(&request.body).into_owned();
            let (status, reply) = answer(request.clone()).await;
            if print {
                println!(
                    "  {name:<8} {} {} {shown}\n  {name:<8} answered {status} {reply}",
                    request.method, request.path
                );
            }
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(reply),
            )
        }
    };
    let app = axum::Router::new().fallback(handler);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        addr,
        requests,
        task,
    })
}
