//! Closed-loop load of unary `Check` calls over a fixed set of HTTP/2
//! connections: each of `concurrency` tasks sends one call, waits for the
//! response, records its latency and sends the next.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::Uri;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::client::Grpc;
use tower_service::Service;

use crate::stats::{RunResult, record};
use crate::wire::{CHECK_PATH, PreEncodedCheckCodec, encoded_check, keyed_target};

/// One HTTP/2 connection driven by tonic's `Grpc` client directly. A tonic
/// `Channel` would put a buffer task between each caller and the
/// connection. Skipping it saves the load generator one task hand-off per
/// call, so more of its core goes to load.
#[derive(Clone)]
struct H2Connection(SendRequest<Body>);

impl Service<http::Request<Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// A fixed set of HTTP/2 connections to one gRPC server.
#[derive(Clone)]
pub struct GrpcTarget {
    origin: Uri,
    connections: Vec<H2Connection>,
}

impl GrpcTarget {
    pub async fn connect(addr: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .with_context(|| format!("connecting to the gRPC server at {addr} timed out"))?
                .with_context(|| format!("cannot connect to the gRPC server at {addr}"))?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP/2 handshake with {addr} failed"))?;
            tokio::spawn(async move {
                // Ends when every sender is dropped or the server closes. The
                // calls on it report any error that matters.
                let _ = connection.await;
            });
            opened.push(H2Connection(sender));
        }
        Ok(GrpcTarget {
            origin: Uri::try_from(format!("http://{addr}"))?,
            connections: opened,
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    fn client(&self, task: usize) -> Grpc<H2Connection> {
        let connection = self.connections[task % self.connections.len()].clone();
        Grpc::with_origin(connection, self.origin.clone())
    }
}

/// Source of the check each call sends.
#[derive(Clone)]
pub enum Requests {
    /// The same check every call.
    Same(Bytes),
    /// A uniformly random check from the pool every call.
    RandomPick(Arc<Vec<Bytes>>),
    /// The check for key `{prefix}{n}`, with `n` counting up from the
    /// counter's value. With `end`, calls stop once `n` reaches it.
    Numbered {
        prefix: Arc<str>,
        next: Arc<AtomicU64>,
        end: Option<u64>,
    },
    /// Each check of the list once, in order.
    List {
        items: Arc<Vec<Bytes>>,
        next: Arc<AtomicU64>,
    },
    /// The check for key `{prefix}{n}` with `n` drawn uniformly from
    /// `0..count` every call, encoded per call so that a million keys need
    /// no pool.
    RandomNumbered { prefix: Arc<str>, count: u64 },
    /// The checks of `inner`, until `remaining` calls have been sent.
    Limited {
        inner: Box<Requests>,
        remaining: Arc<AtomicU64>,
    },
}

impl Requests {
    pub fn numbered(prefix: &str, start: u64, end: Option<u64>) -> Self {
        Requests::Numbered {
            prefix: Arc::from(prefix),
            next: Arc::new(AtomicU64::new(start)),
            end,
        }
    }

    pub fn random_numbered(prefix: &str, count: u64) -> Self {
        Requests::RandomNumbered {
            prefix: Arc::from(prefix),
            count,
        }
    }

    pub fn list(items: Vec<Bytes>) -> Self {
        Requests::List {
            items: Arc::new(items),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns the next check to send, or `None` once a bounded source is
    /// used up.
    fn next(&self, rng: &mut SmallRng) -> Option<Bytes> {
        match self {
            Requests::Same(bytes) => Some(bytes.clone()),
            Requests::RandomPick(pool) => Some(pool[rng.random_range(0..pool.len())].clone()),
            Requests::Numbered { prefix, next, end } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if end.is_some_and(|end| n >= end) {
                    return None;
                }
                Some(encoded_check(&keyed_target(&format!("{prefix}{n}"))))
            }
            Requests::List { items, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                items.get(n).cloned()
            }
            Requests::RandomNumbered { prefix, count } => {
                let n = rng.random_range(0..*count);
                Some(encoded_check(&keyed_target(&format!("{prefix}{n}"))))
            }
            Requests::Limited { inner, remaining } => {
                let taken =
                    remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1));
                taken.ok().and_then(|_| inner.next(rng))
            }
        }
    }
}

/// Condition that stops the tasks.
#[derive(Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    /// Until the request source is used up.
    Exhausted,
}

/// Runs `concurrency` closed-loop tasks against `target`. With `together`,
/// every task waits at a barrier before its first call, so the first
/// `concurrency` calls are in flight at once.
pub async fn run(
    target: &GrpcTarget,
    requests: &Requests,
    concurrency: usize,
    until: Until,
    together: bool,
) -> RunResult {
    let path = PathAndQuery::from_static(CHECK_PATH);
    let barrier = Arc::new(Barrier::new(concurrency));
    let started = Instant::now();
    let deadline = match until {
        Until::Elapsed(duration) => Some(started + duration),
        Until::Exhausted => None,
    };

    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let mut grpc = target.client(task);
        let requests = requests.clone();
        let path = path.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(task as u64);
            let mut result = RunResult::empty();
            if together {
                barrier.wait().await;
            }
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    break;
                }
                let Some(body) = requests.next(&mut rng) else {
                    break;
                };
                let sent = Instant::now();
                let outcome = call(&mut grpc, body, path.clone()).await;
                let latency = sent.elapsed();
                match outcome {
                    Ok(()) => {
                        record(&mut result.latencies, latency);
                        result.ok += 1;
                    }
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                    }
                }
            }
            result
        });
    }

    let mut total = RunResult::empty();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => total.absorb(result),
            Err(error) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("load task failed: {error}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn call(grpc: &mut Grpc<H2Connection>, body: Bytes, path: PathAndQuery) -> Result<(), String> {
    grpc.ready()
        .await
        .map_err(|error| format!("channel not ready: {error}"))?;
    let response = grpc
        .unary(tonic::Request::new(body), path, PreEncodedCheckCodec)
        .await
        .map_err(|status| format!("gRPC error {:?}: {}", status.code(), status.message()))?
        .into_inner();
    let code = response.status.as_ref().map_or(0, |status| status.code);
    if code == 0 {
        Ok(())
    } else {
        Err(format!("check denied with google.rpc code {code}"))
    }
}
