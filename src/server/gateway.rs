//! [`Gateway`]: the shared pieces of a running gateway (account pool, token managers, model
//! catalogue, metrics), built from a checked configuration, and the model-list refresh.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{ProfileArnPolicy, TokenConfig, TokenManager};
use crate::config::{MetricsAccess, ValidConfig};
use crate::error::GatewayError;
use crate::kiro::{
    self, ApiProtocol, BearerKind, HttpConfig, KiroClient, KiroClientConfig, KiroHeaders,
    UpstreamHttp,
};
use crate::layers::{ApiKeyLayer, CaptureConfig, Metrics, RetryConfig, TranslateConfig};
use crate::models::ModelCatalog;
use crate::stack::StackParts;
use http::StatusCode;
use tokio_util::sync::CancellationToken;

/// Everything a running gateway shares between requests.
#[derive(Clone)]
pub struct Gateway {
    /// What the chat stacks are built from (accounts, catalogue, key layer, settings).
    pub parts: StackParts,
    /// When the gateway was built (`/health`'s uptime, `/admin/stats`).
    pub started: SystemTime,
    /// `CORS_ALLOW_ORIGINS` (empty: CORS off).
    pub cors_origins: Vec<String>,
    /// What `/metrics` shows (the routes record into it through `parts.metrics`).
    pub metrics: Metrics,
    /// Who may read `/metrics` (`METRICS_API_KEY`, `metrics_public`, the bind address).
    pub metrics_access: MetricsAccess,
    /// SHA-256 of `ADMIN_API_KEY` (`None`: the admin routes answer 403).
    pub admin_key: Option<[u8; 32]>,
    /// Per-minute history of the metrics, for the dashboard's charts (sampled by
    /// [`Traffic::sample_every_minute`](crate::dashboard::Traffic::sample_every_minute)).
    pub traffic: crate::dashboard::Traffic,
}

/// One account's model list.
async fn list_models_of(
    tokens: &TokenManager,
    client: &KiroClient,
) -> Result<Vec<crate::kiro::types::ModelInfo>, GatewayError> {
    let token = tokens.access_token().await?;
    let list = client
        .list_models_as(
            &token.token,
            tokens.bearer_kind(),
            tokens.profile_arn_for_requests().as_deref(),
        )
        .await
        .map_err(|e| match e {
            // an API key has no refresh to fall back on: say it is the key
            kiro::Error::Status(s)
                if tokens.bearer_kind() == BearerKind::ApiKey
                    && s.status == StatusCode::FORBIDDEN
                    && !s.is_suspended() =>
            {
                kiro::Error::Auth(TokenManager::api_key_refused(403, s.message.clone()))
            }
            other => other,
        })?;
    Ok(list.models)
}

/// One account's token manager and client, from its settings.
fn build_account(
    cfg: &ValidConfig,
    spec: &crate::config::AccountSettings,
    http: UpstreamHttp,
    headers: KiroHeaders,
) -> Result<(TokenManager, KiroClient), GatewayError> {
    let endpoints = &spec.endpoints;
    // the protocol decides what the body must carry; the layers above just use the values
    let body = spec.protocol.body_requirements();
    let profile_arn_policy = if body.profile_arn_required {
        if cfg.profile_arn_policy == ProfileArnPolicy::Never {
            tracing::warn!(
                account = %spec.name,
                "PROFILE_ARN_POLICY=never is ignored: the runtime protocol needs the profile ARN on every call"
            );
        }
        ProfileArnPolicy::Always
    } else {
        cfg.profile_arn_policy
    };
    let tokens = TokenManager::load(
        &spec.credentials,
        endpoints,
        http.clone(),
        headers.clone(),
        TokenConfig {
            refresh_margin: cfg.token_refresh_margin,
            lock_timeout: cfg.credentials_lock_timeout,
            profile_arn_policy,
            ..Default::default()
        },
    )?;
    if body.profile_arn_required && tokens.profile_arn().is_none() {
        return Err(GatewayError::internal(format!(
            "KIRO_API_PROTOCOL={} needs a profile ARN and none was found in {}. It is in the `state` table of kiro-cli's SQLite database (key api.codewhisperer.profile, read through KIRO_CLI_DB_FILE), in the profileArn field of the Kiro IDE's credentials file (KIRO_CREDS_FILE), or can be given as PROFILE_ARN=arn:aws:codewhisperer:<region>:<account>:profile/<id>",
            spec.protocol.as_str(),
            tokens.source().describe()
        )));
    }
    let region = tokens.api_region().to_owned();
    let mut client_cfg = match spec.protocol {
        ApiProtocol::Q => KiroClientConfig::new(endpoints.api(&region)),
        ApiProtocol::Runtime => {
            KiroClientConfig::runtime(endpoints.api(&region), endpoints.management(&region))
        }
    };
    client_cfg.idle_timeout = cfg.streaming_read_timeout;
    client_cfg.headers = headers;
    Ok((tokens, KiroClient::new(http, client_cfg)))
}

impl Gateway {
    /// Build from a checked configuration (reads the credentials; no network yet).
    pub fn from_config(cfg: &ValidConfig) -> Result<Self, GatewayError> {
        if cfg.accounts.is_empty() {
            // the credential loader says what is missing, in the single-account form's words
            return Err(crate::auth::source::load(&cfg.credentials())
                .err()
                .map(GatewayError::from)
                .unwrap_or_else(|| GatewayError::internal(crate::auth::source::HOW_TO_PROVIDE)));
        }
        let headers = KiroHeaders::default();
        // one HTTP client (connection pool) per outbound proxy
        let mut clients: Vec<(Option<String>, UpstreamHttp)> = Vec::new();
        let mut accounts = Vec::with_capacity(cfg.accounts.len());
        for spec in &cfg.accounts {
            let http = match clients.iter().find(|(p, _)| *p == spec.proxy) {
                Some((_, h)) => h.clone(),
                None => {
                    let h = UpstreamHttp::new(&HttpConfig {
                        proxy: spec.proxy.clone(),
                        connect_timeout: cfg.connect_timeout,
                        ..Default::default()
                    })?;
                    clients.push((spec.proxy.clone(), h.clone()));
                    h
                }
            };
            let (tokens, client) =
                build_account(cfg, spec, http, headers.clone()).map_err(|e| {
                    if cfg.accounts.len() > 1 {
                        let m = format!("account {:?}: {}", spec.name, e.message());
                        e.with_message(m)
                    } else {
                        e
                    }
                })?;
            accounts.push(
                crate::accounts::Account::kiro(spec.name.as_str(), tokens, client)
                    .with_priority(spec.priority)
                    .with_weight(spec.weight),
            );
        }
        let pool = crate::accounts::AccountPool::new(accounts, cfg.pool.clone())
            .map_err(GatewayError::internal)?;
        let primary = pool.primary();
        let (tokens, client) = match (primary.tokens(), primary.client()) {
            (Some(t), Some(c)) => (t.clone(), c.clone()),
            _ => return Err(GatewayError::internal("the first account has no client")),
        };
        let metrics = Metrics::new();
        let parts = StackParts {
            metrics: Some(metrics.clone()),
            api_keys: ApiKeyLayer::with_clients(cfg.client_keys.iter().cloned()),
            body_limit: cfg.max_body_bytes,
            body_budget: Some(crate::layers::BodyBudget::new(cfg.max_inflight_body_bytes)),
            capture: CaptureConfig {
                mode: cfg.debug_mode,
                dir: cfg.debug_dir.clone(),
                keep: cfg.debug_keep,
            },
            catalog: Arc::new(
                ModelCatalog::new(cfg.model_cache_ttl, cfg.unknown_model_policy)
                    .with_aliases(cfg.model_aliases.iter().map(|(a, m)| (a, m.clone()))),
            ),
            translate: TranslateConfig {
                tokens: Some(tokens.clone()),
                origin: client.body_requirements().origin.into(),
                tool_description_max: cfg.tool_description_max_length,
                thinking: crate::api::thinking::ThinkingDefaults {
                    enabled: cfg.fake_reasoning,
                    budget: cfg.fake_reasoning_max_tokens,
                },
                thinking_mode: cfg.thinking_mode,
                reasoning_mode: cfg.reasoning_mode,
                close_streams: CancellationToken::new(),
                pooled: pool.is_pooled(),
                max_payload_bytes: cfg.kiro_max_payload_bytes,
                auto_trim_payload: cfg.auto_trim_payload,
                open_streams: Default::default(),
                responses: crate::api::responses::ResponseStoreHandle::new(Arc::new(
                    crate::api::responses::MemoryResponseStore::new(
                        cfg.responses_store_max,
                        cfg.responses_store_ttl,
                    ),
                )),
            },
            retry: RetryConfig {
                max_attempts: cfg.retry_max_attempts,
                base_delay: cfg.retry_base_delay,
                max_delay: cfg.retry_max_delay,
                budget: cfg.retry_budget,
                first_token_timeout: cfg.first_token_timeout,
                first_token_max_attempts: cfg.first_token_max_attempts,
                retry_after_cap: cfg.retry_after_cap,
            },
            tokens,
            client,
            accounts: pool,
        };
        Ok(Gateway {
            admin_key: cfg.admin_key,
            traffic: crate::dashboard::Traffic::new(),
            parts,
            started: SystemTime::now(),
            cors_origins: cfg.cors_allow_origins.clone(),
            metrics,
            metrics_access: cfg.metrics_access.clone(),
        })
    }

    /// Fetch the model list now, from the first account that answers (in configuration
    /// order); on failure the current (fallback) list stays and the first account's error is
    /// returned.
    pub async fn refresh_models(&self) -> Result<usize, GatewayError> {
        let mut first_err = None;
        for a in self.parts.accounts.accounts() {
            let (Some(tokens), Some(client)) = (a.tokens(), a.client()) else {
                continue;
            };
            match list_models_of(tokens, client).await {
                Ok(models) => {
                    let n = models.len();
                    self.parts.catalog.set_models(models);
                    return Ok(n);
                }
                Err(e) => {
                    tracing::debug!(account = a.name(), error = %e, "model list failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| GatewayError::internal("no account to list models with")))
    }
}
