//! Stand-in for the platform's usage-check API: a minimal hyper HTTP/1.1
//! server that allows every key of workspace `bench` and counts the calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The body of a 200 the usage-authz parser accepts as "allowed".
const ALLOWED_BODY: &str = r#"{"workspace":"bench","workspaceId":"ws_bench","underCap":true}"#;

/// Handle on the running stand-in, which serves until the process exits.
#[derive(Clone)]
pub struct UsageCheckStub {
    calls: Arc<AtomicU64>,
    delay_micros: Arc<AtomicU64>,
}

impl UsageCheckStub {
    /// Starts the server on its own thread and single-threaded runtime, so
    /// its work stays off the load generator's runtime.
    pub fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let stub = UsageCheckStub {
            calls: Arc::new(AtomicU64::new(0)),
            delay_micros: Arc::new(AtomicU64::new(0)),
        };
        let served = stub.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("usage-check-stub".to_string())
            .spawn(move || runtime.block_on(served.accept_loop(listener)))?;
        Ok(stub)
    }

    /// Number of usage-check requests received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Sets the delay before each response is sent. Zero responds at once.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::SeqCst);
    }

    async fn accept_loop(self, listener: std::net::TcpListener) {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("usage-check stand-in: cannot register the listener: {error}");
                return;
            }
        };
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("usage-check stand-in: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let stub = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| stub.clone().respond(request));
                // A client closing its pooled connection ends this with an
                // error that is irrelevant to the benchmark.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn respond(
        self,
        _request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let response = Response::builder()
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(ALLOWED_BODY.as_bytes())))
            .expect("static response parts are valid");
        Ok(response)
    }
}
