//! Helpers shared by the integration tests: everything talks to a MockKiro on 127.0.0.1:0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use bytes::Bytes;
use kiro_gateway::auth::{CredentialSettings, TokenConfig, TokenManager};
use kiro_gateway::kiro::types::{
    ConversationState, CurrentMessage, GenerateAssistantRequest, UserInputMessage,
};
use kiro_gateway::kiro::{
    EndpointTemplates, HttpConfig, KiroClient, KiroClientConfig, KiroHeaders, UpstreamHttp,
};
use kiro_gateway::mock::MockKiro;
use kiro_gateway::Secret;

pub fn http() -> UpstreamHttp {
    UpstreamHttp::new(&HttpConfig::default()).expect("http client")
}

pub fn endpoints(mock: &MockKiro) -> EndpointTemplates {
    EndpointTemplates::all(&mock.url())
}

pub fn manager(mock: &MockKiro, settings: CredentialSettings, cfg: TokenConfig) -> TokenManager {
    TokenManager::load(
        &settings,
        &endpoints(mock),
        http(),
        KiroHeaders::new("test-fingerprint"),
        cfg,
    )
    .expect("token manager")
}

/// A manager on the bare REFRESH_TOKEN source with the mock's initial refresh token.
pub fn env_manager(mock: &MockKiro) -> TokenManager {
    manager(
        mock,
        CredentialSettings {
            refresh_token: Some(Secret::new(mock.config().initial_refresh_token.clone())),
            ..Default::default()
        },
        TokenConfig::default(),
    )
}

pub fn client(mock: &MockKiro) -> KiroClient {
    let mut cfg = KiroClientConfig::new(mock.url());
    cfg.headers = KiroHeaders::new("test-fingerprint");
    KiroClient::new(http(), cfg)
}

pub fn simple_body(content: &str, profile_arn: Option<String>) -> Bytes {
    let req = GenerateAssistantRequest {
        conversation_state: ConversationState {
            conversation_id: "7d0e8c1a-0000-4000-8000-000000000001".into(),
            chat_trigger_type: "MANUAL".into(),
            current_message: CurrentMessage {
                user_input_message: UserInputMessage {
                    content: content.into(),
                    model_id: "claude-sonnet-4.5".into(),
                    origin: "AI_EDITOR".into(),
                    ..Default::default()
                },
            },
            history: vec![],
        },
        profile_arn,
    };
    Bytes::from(serde_json::to_vec(&req).unwrap())
}
