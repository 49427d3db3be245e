//! The settings table against its readers, `config.toml.example` and README.md; checking.

use super::*;
use crate::layers::DebugMode;
use crate::Secret;

/// The keys `config.toml.example` sets or shows commented out (`# key = ...`), and the
/// tables it shows (`# [[api_keys]]`); the lines inside the table examples are the tables'.
fn example_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    let mut in_table = false;
    for line in text.lines() {
        let l = line.strip_prefix("# ").unwrap_or(line).trim_end();
        if let Some(t) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            keys.insert(t.to_owned());
            in_table = true;
            continue;
        }
        if l.starts_with("# ---") {
            in_table = false;
        }
        if in_table {
            continue;
        }
        if let Some((k, _)) = l.split_once(" = ") {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.insert(k.to_owned());
            }
        }
    }
    keys
}

#[test]
fn the_example_file_lists_exactly_the_keys_of_the_table_with_their_defaults() {
    let text = include_str!("../../config.toml.example");
    // the example sets every key to its default value
    let parsed = Config::from_toml(text, "config.toml.example").unwrap();
    assert_eq!(parsed, Config::default());
    // it lists every key of the table and no other
    let table: std::collections::BTreeSet<String> =
        SETTINGS.iter().map(|s| s.key.to_owned()).collect();
    let listed = example_keys(text);
    let missing: Vec<_> = table.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "config.toml.example lacks {missing:?} and has {extra:?} that the table lacks"
    );
    // every setting is documented in the table itself
    for s in SETTINGS {
        assert!(s.doc.trim().len() > 3, "{} has no doc comment", s.key);
    }
    // and names every environment variable, older names included
    for s in SETTINGS {
        for env in s.env {
            assert!(text.contains(env), "{env} missing from config.toml.example");
        }
    }
}

#[test]
fn the_readme_documents_every_variable_of_the_table() {
    let readme = include_str!("../../README.md");
    for s in SETTINGS {
        for env in s.env {
            assert!(
                readme.contains(&format!("`{env}`")),
                "{env} ({}) missing from README.md",
                s.key
            );
        }
    }
}

#[test]
fn every_variable_accepted_before_the_table_is_still_accepted() {
    // the names the gateway read before the settings became one table
    const BEFORE: &[&str] = &[
        "SERVER_HOST",
        "SERVER_PORT",
        "PROXY_API_KEY",
        "METRICS_API_KEY",
        "METRICS_PUBLIC",
        "ADMIN_API_KEY",
        "KIRO_ACCOUNTS_FILE",
        "ACCOUNT_SELECTION",
        "ACCOUNT_COOLDOWN_SECS",
        "ACCOUNT_COOLDOWN_MAX_SECS",
        "ACCOUNT_FAILURE_THRESHOLD",
        "ACCOUNT_QUOTA_PARK",
        "STICKY_TTL_SECS",
        "KIRO_CREDS_FILE",
        "REFRESH_TOKEN",
        "PROFILE_ARN",
        "KIRO_REGION",
        "KIRO_CLI_DB_FILE",
        "PROFILE_ARN_POLICY",
        "TOKEN_REFRESH_MARGIN_SECS",
        "KIRO_API_KEY",
        "SQLITE_READONLY",
        "CREDENTIALS_LOCK_TIMEOUT_SECS",
        "KIRO_API_PROTOCOL",
        "KIRO_API_URL",
        "KIRO_MANAGEMENT_URL",
        "KIRO_DESKTOP_AUTH_URL",
        "KIRO_OIDC_URL",
        "VPN_PROXY_URL",
        "CONNECT_TIMEOUT",
        "FIRST_TOKEN_TIMEOUT",
        "FIRST_TOKEN_MAX_RETRIES",
        "STREAMING_READ_TIMEOUT",
        "SHUTDOWN_GRACE_SECS",
        "HEADER_READ_TIMEOUT",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY_MS",
        "RETRY_MAX_DELAY_MS",
        "RETRY_BUDGET_SECS",
        "RETRY_AFTER_MAX_SECS",
        "MODEL_CACHE_TTL",
        "UNKNOWN_MODEL_POLICY",
        "MODEL_ALIASES",
        "TOOL_DESCRIPTION_MAX_LENGTH",
        "FAKE_REASONING",
        "FAKE_REASONING_MAX_TOKENS",
        "FAKE_REASONING_HANDLING",
        "REASONING_MODE",
        "MAX_BODY_BYTES",
        "MAX_INFLIGHT_BODY_BYTES",
        "MAX_CONNECTIONS",
        "KIRO_MAX_PAYLOAD_BYTES",
        "AUTO_TRIM_PAYLOAD",
        "RESPONSES_STORE_MAX",
        "RESPONSES_STORE_TTL_SECS",
        "CORS_ALLOW_ORIGINS",
        "WORKER_THREADS",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "DEBUG_MODE",
        "DEBUG_DIR",
        "DEBUG_KEEP",
    ];
    let names: Vec<&str> = SETTINGS
        .iter()
        .flat_map(|s| s.env.iter().copied())
        .collect();
    for name in BEFORE {
        assert!(names.contains(name), "{name} is no longer read");
    }
    // and the config.toml keys renamed with a unit
    for (old, new) in [
        ("connect_timeout", "connect_timeout_secs"),
        ("first_token_timeout", "first_token_timeout_secs"),
        ("streaming_read_timeout", "streaming_read_timeout_secs"),
        ("header_read_timeout", "header_read_timeout_secs"),
        ("model_cache_ttl", "model_cache_ttl_secs"),
    ] {
        assert_eq!(setting_of_key(old).map(|s| s.key), Some(new), "{old}");
    }
}

#[test]
fn durations_take_the_new_names_and_the_old_ones() {
    let old = Config::from_toml(
        "first_token_timeout = 2.5
model_cache_ttl = 60
",
        "c",
    )
    .unwrap();
    let new = Config::from_toml(
        "first_token_timeout_secs = 2.5
model_cache_ttl_secs = 60
",
        "c",
    )
    .unwrap();
    assert_eq!(old, new);
    assert_eq!(new.first_token_timeout_secs, 2.5);
    assert_eq!(new.model_cache_ttl_secs, 60);
    let err = Config::from_toml(
        "connect_timeout = 5
connect_timeout_secs = 6
",
        "c",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "c: `connect_timeout` and `connect_timeout_secs` are the same setting: give only `connect_timeout_secs`"
    );

    let mut c = Config::default();
    c.apply_env(|k| match k {
        "STREAMING_READ_TIMEOUT" => Some("45".into()),
        "HEADER_READ_TIMEOUT_SECS" => Some("7.5".into()),
        "CONNECT_TIMEOUT_SECS" => Some("9".into()),
        "CONNECT_TIMEOUT" => Some("\"9\"".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.streaming_read_timeout_secs, 45.0);
    assert_eq!(c.header_read_timeout_secs, 7.5);
    assert_eq!(c.connect_timeout_secs, 9);
    let v = c.validate().unwrap();
    assert_eq!(v.streaming_read_timeout, std::time::Duration::from_secs(45));
    assert_eq!(
        v.header_read_timeout,
        std::time::Duration::from_millis(7500)
    );
    assert_eq!(v.connect_timeout, std::time::Duration::from_secs(9));
    let err = Config::default()
        .apply_env(|k| match k {
            "FIRST_TOKEN_TIMEOUT_SECS" => Some("10".into()),
            "FIRST_TOKEN_TIMEOUT" => Some("20".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "FIRST_TOKEN_TIMEOUT: \"20\" disagrees with FIRST_TOKEN_TIMEOUT_SECS=\"10\": they are the same setting (set only FIRST_TOKEN_TIMEOUT_SECS)"
    );
}

#[test]
fn booleans_are_strict_and_the_error_names_the_variable_and_the_value() {
    let mut c = Config::default();
    for (v, want) in [("no", false), ("on", true), ("0", false), ("Yes", true)] {
        c.set_env("FAKE_REASONING", v).unwrap();
        assert_eq!(c.fake_reasoning, want, "{v}");
    }
    // what worked before still works: the words FAKE_REASONING documented as off
    c.set_env("FAKE_REASONING", "disabled").unwrap();
    assert!(!c.fake_reasoning);
    // an empty variable keeps the value in force
    c.set_env("AUTO_TRIM_PAYLOAD", "true").unwrap();
    c.set_env("AUTO_TRIM_PAYLOAD", "").unwrap();
    assert!(c.auto_trim_payload);
    // garbage was silently true (FAKE_REASONING) or false (the others); now it stops startup
    assert_eq!(
        c.set_env("FAKE_REASONING", "maybe")
            .unwrap_err()
            .to_string(),
        "FAKE_REASONING: \"maybe\" is not a boolean (true or false, 1 or 0, yes or no, on or off)"
    );
    assert_eq!(
        c.set_env("METRICS_PUBLIC", "yes please")
            .unwrap_err()
            .to_string(),
        "METRICS_PUBLIC: \"yes please\" is not a boolean (true or false, 1 or 0, yes or no, on or off)"
    );
    let err = Config::from_toml("sqlite_readonly = \"sometimes\"\n", "config.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config.toml: sqlite_readonly (SQLITE_READONLY): \"sometimes\" is not a boolean (true or false, 1 or 0, yes or no, on or off)"
    );
}

#[test]
fn settings_with_a_set_of_values_are_typed_where_they_are_read() {
    use crate::api::thinking::{ReasoningMode, ThinkingMode};
    let c = Config::from_toml(
        "debug_mode = \"errors\"\nlog_level = \"warning\"\nlog_format = \"json\"\nreasoning_mode = \"native\"\nfake_reasoning_handling = \"strip_tags\"\naccount_quota_park = 600\n",
        "c",
    )
    .unwrap();
    assert_eq!(c.debug_mode, DebugMode::Errors);
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.reasoning_mode, ReasoningMode::Native);
    assert_eq!(c.fake_reasoning_handling, ThinkingMode::StripTags);
    assert_eq!(
        c.account_quota_park,
        crate::accounts::QuotaPark::For(std::time::Duration::from_secs(600))
    );
    let v = c.validate().unwrap();
    assert_eq!((v.log_filter, v.json_logs), ("warn", true));
    let err = Config::from_toml("log_format = \"xml\"\n", "c")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "c: log_format (LOG_FORMAT): \"xml\" is not text or json"
    );
    let err = Config::default()
        .set_env("LOG_LEVEL", "loud")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "LOG_LEVEL: \"loud\" is not trace, debug, info, warning or error"
    );
    // an empty region variable keeps the region
    let mut c = Config::default();
    c.set_env("KIRO_REGION", "").unwrap();
    assert_eq!(c.kiro_region, "us-east-1");
}

#[test]
fn unknown_keys_are_errors_naming_them() {
    let err = Config::from_toml("port = 1\nprot = 2\n", "config.toml").unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let mut c = Config::from_toml("port = 9000\nkiro_region = \"eu-central-1\"\n", "c").unwrap();
    c.apply_env(|k| match k {
        "SERVER_PORT" => Some("9100".into()),
        "REFRESH_TOKEN" => Some("\"tok\"".into()),
        "DEBUG_MODE" => Some("errors".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.port, 9100);
    assert_eq!(c.kiro_region, "eu-central-1");
    assert_eq!(c.refresh_token.as_ref().map(Secret::expose), Some("tok"));
    let v = c.validate().unwrap();
    assert_eq!(v.debug_mode, DebugMode::Errors);
    let mut bad = Config::default();
    assert!(bad.set_env("SERVER_PORT", "eighty").is_err());
}

#[test]
fn refuses_a_public_address_without_a_key() {
    let c = Config {
        host: "0.0.0.0".into(),
        ..Default::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("PROXY_API_KEY"), "{err}");
    let ok = Config {
        host: "0.0.0.0".into(),
        proxy_api_key: "k".into(),
        ..Default::default()
    };
    assert!(ok.validate().is_ok());
}

#[test]
fn protocol_picks_the_default_hosts_and_urls_stay_overridable() {
    let q = Config::default().validate().unwrap();
    assert_eq!(q.api_protocol, crate::kiro::ApiProtocol::Q);
    assert_eq!(
        q.endpoints().api("us-east-1"),
        "https://q.us-east-1.amazonaws.com"
    );
    let mut c = Config::default();
    c.apply_env(|k| (k == "KIRO_API_PROTOCOL").then(|| "runtime".into()))
        .unwrap();
    let rt = c.validate().unwrap();
    assert_eq!(rt.api_protocol, crate::kiro::ApiProtocol::Runtime);
    let e = rt.endpoints();
    assert_eq!(
        e.api("eu-central-1"),
        "https://runtime.eu-central-1.kiro.dev"
    );
    assert_eq!(
        e.management("eu-central-1"),
        "https://management.eu-central-1.kiro.dev"
    );
    c.set_env("KIRO_MANAGEMENT_URL", "http://127.0.0.1:9/m")
        .unwrap();
    c.set_env("KIRO_API_URL", "http://127.0.0.1:9/r").unwrap();
    let e = c.validate().unwrap().endpoints();
    assert_eq!(e.management("x"), "http://127.0.0.1:9/m");
    assert_eq!(e.api("x"), "http://127.0.0.1:9/r");
    // a value outside the set is refused where it is given
    let err = c
        .set_env("KIRO_API_PROTOCOL", "grpc")
        .unwrap_err()
        .to_string();
    assert!(err.contains("KIRO_API_PROTOCOL"), "{err}");
}

#[test]
fn the_api_key_is_a_secret_in_debug_output() {
    let mut c = Config::default();
    c.set_env("KIRO_API_KEY", "ksk_supersecret123").unwrap();
    c.set_env("PROXY_API_KEY", "client-supersecret").unwrap();
    c.set_env("REFRESH_TOKEN", "refresh-supersecret").unwrap();
    let v = c.validate().unwrap();
    assert!(v.has_credentials());
    assert_eq!(
        v.credentials().api_key.as_ref().map(Secret::expose),
        Some("ksk_supersecret123")
    );
    for text in [
        format!("{c:?}"),
        format!("{v:?}"),
        format!("{:?}", v.credentials()),
    ] {
        assert!(!text.contains("supersecret"), "{text}");
    }
    let from_toml = Config::from_toml("kiro_api_key = \"ksk_t\"\n", "c").unwrap();
    assert_eq!(
        from_toml.kiro_api_key.map(|k| k.expose().to_owned()),
        Some("ksk_t".into())
    );
}

#[test]
fn accounts_come_from_the_environment_the_tables_and_the_accounts_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("accounts.json");
    std::fs::write(
        &json,
        r#"[{"name": "j1", "refresh_token": "r1", "protocol": "runtime", "profile_arn": "arn:x"},
            {"name": "j2", "kiro_api_key": "ksk_j2", "weight": 3}]"#,
    )
    .unwrap();
    let toml_file = dir.path().join("accounts.toml");
    std::fs::write(
        &toml_file,
        "[[accounts]]\nname = \"t1\"\nrefresh_token = \"r\"\nregion = \"eu-central-1\"\nproxy = \"http://127.0.0.1:3128\"\n",
    )
    .unwrap();
    let mut c = Config::from_toml(
        "[[accounts]]\nname = \"team-a\"\nkiro_creds_file = \"/x/creds.json\"\npriority = 2\nkiro_api_url = \"http://127.0.0.1:9\"\n",
        "c",
    )
    .unwrap();
    c.set_env("REFRESH_TOKEN", "env-token").unwrap();
    c.set_env("KIRO_ACCOUNTS_FILE", &json.display().to_string())
        .unwrap();
    let v = c.validate().unwrap();
    let names: Vec<&str> = v.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["default", "team-a", "j1", "j2"]);
    assert_eq!(v.accounts[1].priority, 2);
    assert_eq!(v.accounts[1].endpoints.api_url, "http://127.0.0.1:9");
    assert_eq!(v.accounts[2].protocol, crate::kiro::ApiProtocol::Runtime);
    assert!(v.accounts[2].endpoints.api_url.contains("kiro.dev"));
    assert_eq!(v.accounts[3].weight, 3);
    // the secrets stay secrets in debug output
    let text = format!("{v:?}");
    assert!(
        !text.contains("ksk_j2") && !text.contains("env-token"),
        "{text}"
    );

    // a mistake in the file is reported as what it is, with the file's name
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"name": "x", "refresh_token": "r", "colour": "red"}]"#,
    )
    .unwrap();
    c.kiro_accounts_file = Some(bad);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("bad.json") && err.contains("colour"), "{err}");

    c.kiro_accounts_file = Some(toml_file);
    let v = c.validate().unwrap();
    let t1 = v.accounts.iter().find(|a| a.name == "t1").unwrap();
    assert_eq!(t1.credentials.region.as_deref(), Some("eu-central-1"));
    assert_eq!(t1.proxy.as_deref(), Some("http://127.0.0.1:3128"));
}

#[test]
fn bad_accounts_are_refused_with_their_place() {
    // refused when the file is read (a value outside a setting's set) or when checked
    let check = |toml_text: &str, env: bool, want: &str| {
        let err = match Config::from_toml(toml_text, "c") {
            Err(e) => e.to_string(),
            Ok(mut c) => {
                if env {
                    c.set_env("REFRESH_TOKEN", "t").unwrap();
                }
                c.validate().unwrap_err().to_string()
            }
        };
        assert!(err.contains(want), "{err}");
    };
    check("[[accounts]]\nname = \"a\"\n", false, "has no credentials");
    check(
        "[[accounts]]\nname = \"default\"\nrefresh_token = \"x\"\n",
        true,
        "used twice",
    );
    check(
        "[[accounts]]\nname = \"a b\"\nrefresh_token = \"x\"\n",
        false,
        "may only hold",
    );
    check(
        "[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\nweight = 0\n",
        false,
        "weight",
    );
    check(
        "[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\nprotocol = \"grpc\"\n",
        false,
        "accounts[0]",
    );
    check(
        "account_selection = \"random\"\n",
        true,
        "ACCOUNT_SELECTION",
    );
    check(
        "account_quota_park = \"weekly\"\n",
        true,
        "ACCOUNT_QUOTA_PARK",
    );
    // the tables alone are credentials enough
    let c = Config::from_toml("[[accounts]]\nname = \"a\"\nrefresh_token = \"x\"\n", "c").unwrap();
    assert!(c.validate().unwrap().has_credentials());
    assert!(!Config::default().validate().unwrap().has_credentials());
}

#[test]
fn model_aliases_come_from_the_table_and_the_variable() {
    let mut c = Config::from_toml(
        "[model_aliases]\n\"gpt-4o\" = \"claude-sonnet-4.5\"\no3 = \"claude-opus-4.5\"\n",
        "c",
    )
    .unwrap();
    c.set_env(
        "MODEL_ALIASES",
        " o3 = claude-sonnet-4 , gpt-4.1=claude-haiku-4.5,",
    )
    .unwrap();
    let v = c.validate().unwrap();
    assert_eq!(
        v.model_aliases,
        [
            ("gpt-4.1".to_owned(), "claude-haiku-4.5".to_owned()),
            ("gpt-4o".to_owned(), "claude-sonnet-4.5".to_owned()),
            ("o3".to_owned(), "claude-sonnet-4".to_owned()),
        ]
    );
    let err = Config::default()
        .set_env("MODEL_ALIASES", "gpt-4o")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "MODEL_ALIASES: \"gpt-4o\" is not alias=model (the form is alias=model,alias2=model2)"
    );
    let err = Config::from_toml("[model_aliases]\n\"gpt-4o\" = \"\"\n", "c")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "model_aliases: \"gpt-4o\" = \"\" needs both an alias and a model"
    );
}

#[test]
fn unknown_model_policy_defaults_to_nearest_and_checks_its_value() {
    use crate::models::UnknownModelPolicy;
    let v = Config::default().validate().unwrap();
    assert_eq!(v.unknown_model_policy, UnknownModelPolicy::Nearest);
    let mut c = Config::default();
    c.set_env("UNKNOWN_MODEL_POLICY", "pass").unwrap();
    assert_eq!(
        c.validate().unwrap().unknown_model_policy,
        UnknownModelPolicy::Pass
    );
    assert_eq!(
        c.set_env("UNKNOWN_MODEL_POLICY", "drop")
            .unwrap_err()
            .to_string(),
        "UNKNOWN_MODEL_POLICY: \"drop\" is not nearest, reject or pass"
    );
}
