//! The no-op authorizer: a tonic `Authorization` server that allows every
//! check with one header and does nothing else. It is the floor for any
//! tonic-based authorizer, so usage-authz is measured against it.

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderValue, HeaderValueOption,
    HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::wire::BENCH_WORKSPACE;

struct NoopAuthorizer {
    response: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for NoopAuthorizer {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.response.clone()))
    }
}

fn allow_with_header() -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: 0,
            message: String::new(),
            details: vec![],
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "x-workspace-id".to_string(),
                    value: BENCH_WORKSPACE.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })),
        dynamic_metadata: None,
    }
}

/// Serves the no-op authorizer on `addr` until the process is killed. It
/// runs on tokio's default multi-thread runtime with TCP_NODELAY, as
/// usage-authz does, so only the authorization work differs.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(NoopAuthorizer {
                response: allow_with_header(),
            }))
            .serve_with_incoming(incoming)
            .await?;
        Ok(())
    })
}
