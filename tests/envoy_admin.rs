//! End-to-end tests of the admin API with traffic through the real Envoy
//! 1.40: an invalidation takes effect on the very next request, and a
//! workspace-wide one drops that workspace's keys and no other.

mod support;

use tonic::transport::Channel;
use usage_authz::admin::pb;
use usage_authz::admin::pb::cache_admin_client::CacheAdminClient;
use usage_authz::keys::KeyDigest;
use wiremock::ResponseTemplate;

use support::{Stack, StackOptions, UNAUTHORIZED_MESSAGE, allowed, usage_check_for};

const TOKEN: &str = "e2e-admin-token-0123456789abcdef";

async fn admin(
    stack: &Stack,
) -> CacheAdminClient<
    tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
> {
    let channel = Channel::from_shared(format!("http://{}", stack.admin_addr))
        .unwrap()
        .connect()
        .await
        .expect("cannot connect to the admin API");
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    CacheAdminClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", header.clone());
        Ok(request)
    })
}

/// The API allows `key` for `workspace` once, then answers 401: the platform
/// revoked the key after the first check.
async fn allow_once_then_revoke(stack: &Stack, key: &str, workspace: &str) {
    usage_check_for(key)
        .respond_with(allowed(workspace, &format!("id-{workspace}")))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stack.usage_api)
        .await;
    usage_check_for(key)
        .respond_with(ResponseTemplate::new(401))
        .with_priority(2)
        .mount(&stack.usage_api)
        .await;
}

fn options() -> StackOptions {
    StackOptions {
        admin_token: Some(TOKEN.to_string()),
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_key_is_denied_on_next_request() {
    let stack = Stack::start(options()).await;
    let key = stack.new_key("revoked-later");
    allow_once_then_revoke(&stack, &key, "acme").await;
    let target = format!("/infer?api_key={key}");

    assert_eq!(stack.fetch(&target).await.status, 200);
    // Cached: the API is not asked again, so the revocation is not seen yet.
    assert_eq!(stack.fetch(&target).await.status, 200);
    assert_eq!(stack.usage_calls(&key).await, 1);

    let digest = KeyDigest::of(&key).to_hex();
    let response = admin(&stack)
        .await
        .invalidate_key(pb::InvalidateKeyRequest {
            key: Some(pb::invalidate_key_request::Key::KeySha256(digest)),
        })
        .await
        .expect("InvalidateKey failed")
        .into_inner();
    assert!(response.was_cached);

    let reply = stack.fetch(&target).await;
    reply.assert_denial("after invalidation", 401, Some(UNAUTHORIZED_MESSAGE));
    assert_eq!(stack.usage_calls(&key).await, 2);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_invalidation_drops_only_that_workspace() {
    let stack = Stack::start(options()).await;
    let acme_keys = [stack.new_key("acme-1"), stack.new_key("acme-2")];
    let other_key = stack.new_key("other");
    for key in &acme_keys {
        allow_once_then_revoke(&stack, key, "acme").await;
    }
    allow_once_then_revoke(&stack, &other_key, "other-co").await;

    for key in acme_keys.iter().chain([&other_key]) {
        let reply = stack.fetch(&format!("/infer?api_key={key}")).await;
        assert_eq!(reply.status, 200, "first request of a fresh key");
    }

    let dropped = admin(&stack)
        .await
        .invalidate_workspace(pb::InvalidateWorkspaceRequest {
            workspace: "acme".into(),
        })
        .await
        .expect("InvalidateWorkspace failed")
        .into_inner()
        .invalidated;
    assert_eq!(dropped, 2);

    for key in &acme_keys {
        let reply = stack.fetch(&format!("/infer?api_key={key}")).await;
        reply.assert_denial("acme key after invalidation", 401, Some(UNAUTHORIZED_MESSAGE));
        assert_eq!(stack.usage_calls(key).await, 2, "acme key asked the API again");
    }
    let reply = stack.fetch(&format!("/infer?api_key={other_key}")).await;
    assert_eq!(reply.status, 200, "other workspace keeps its cached verdict");
    assert_eq!(reply.workspace_headers, vec!["other-co".to_string()]);
    assert_eq!(stack.usage_calls(&other_key).await, 1);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_rejects_wrong_token() {
    let stack = Stack::start(options()).await;
    let channel = Channel::from_shared(format!("http://{}", stack.admin_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CacheAdminClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
        let wrong = "Bearer e2e-wrong-token-0123456789abcdef".parse().unwrap();
        request.metadata_mut().insert("authorization", wrong);
        Ok(request)
    });
    let status = client
        .invalidate_workspace(pb::InvalidateWorkspaceRequest {
            workspace: "acme".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    stack.finish().await;
}
