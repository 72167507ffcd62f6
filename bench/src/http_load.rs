//! Closed-loop HTTP/1.1 load: one request in flight per keep-alive
//! connection, each response read in full before the next request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::stats::{RunResult, record};

async fn open(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    stream.set_nodelay(true).map_err(|error| error.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP/1 handshake with {addr} failed: {error}"))?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped, and its error then
        // carries no information for the benchmark.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, target: &str) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|error| format!("connection closed: {error}"))?;
    let request = hyper::Request::get(target)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("reading the body failed: {error}"))?;
    if status == hyper::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("unexpected HTTP status {status}"))
    }
}

/// Sends `GET {target}` to `addr` over `connections` connections for
/// `duration`. A failed connection is counted as an error and reopened.
pub async fn run(addr: SocketAddr, target: &str, connections: usize, duration: Duration) -> RunResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let target = target.to_string();
        tasks.spawn(async move {
            let mut result = RunResult::empty();
            let mut sender = None;
            while Instant::now() < deadline {
                if sender.is_none() {
                    match open(addr).await {
                        Ok(opened) => sender = Some(opened),
                        Err(error) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(error);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let connection = sender.as_mut().expect("opened above");
                let sent = Instant::now();
                match get(connection, &target).await {
                    Ok(()) => {
                        record(&mut result.latencies, sent.elapsed());
                        result.ok += 1;
                    }
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                        sender = None;
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

/// Sends one `GET {target}` on a new connection, to wait for Envoy to serve.
pub async fn get_once(addr: SocketAddr, target: &str) -> Result<(), String> {
    let mut sender = open(addr).await?;
    get(&mut sender, target).await
}
