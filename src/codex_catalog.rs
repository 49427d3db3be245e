//! Model metadata for the Codex CLI (`model_catalog_json`).
//!
//! Codex knows nothing about Claude ids: for a slug it has no metadata for it offers no
//! `apply_patch` tool, sends no `reasoning` and assumes a 272 000-token window. Its config key
//! `model_catalog_json` points at a file in Codex's own catalogue shape, `{"models": [ModelInfo,
//! …]}` (codex `protocol/src/openai_models.rs`), which [`codex_catalog`] builds for the models
//! a [`ModelCatalog`] lists. `kiro-gateway codex-catalog` prints it for the configured accounts,
//! and `examples/codex/model_catalog.json` is it for the built-in list.
//!
//! Every member Codex requires is present, in the spellings its serde enums accept across its
//! versions: the older `ModelInfo` needs `base_instructions`, `supports_reasoning_summaries`
//! and `supports_parallel_tool_calls`; the newer one takes its instructions from
//! `model_messages.instructions_template` and ignores the older members (it does not refuse
//! unknown ones). Reasoning levels are the four Codex has known longest (`low`, `medium`,
//! `high`, `xhigh`); a level the model's schema lacks is mapped to its nearest by the gateway.

use serde_json::{json, Value};

use crate::models::{ModelCatalog, DEFAULT_MAX_INPUT_TOKENS};

/// The instructions Codex sends with every request for these models (`base_instructions` and
/// `model_messages.instructions_template`): Codex's own prompt is written for GPT models.
pub const INSTRUCTIONS: &str = "You are a coding agent working in the Codex CLI on the user's computer. You share the user's workspace: read files, run commands and change code with the tools you are given, and keep going until the task is done or you need a decision from the user.

- Look before you change anything: read the files involved and search with `rg` (or `grep` when `rg` is missing).
- Edit files with the `apply_patch` tool. Its input is the raw patch text, never JSON: a line `*** Begin Patch`, then for each file `*** Add File: <path>` (every line prefixed with `+`), `*** Delete File: <path>` or `*** Update File: <path>` followed by `@@` hunks whose lines start with a space (context), `-` (removed) or `+` (added), and a last line `*** End Patch`.
- Keep changes to what the task needs. Never revert changes you did not make, and run no destructive git command (`reset --hard`, `checkout --`, `clean -f`) unless the user asks for it.
- Run the project's tests or build when there are any, and say what you could not check.
- End with a short plain-text summary: what changed, where (paths in backticks), and the next step if there is one.";

/// Codex's reasoning levels, weakest first, with the words its picker shows.
const LEVELS: &[(&str, &str)] = &[
    ("low", "Quick answers with light reasoning"),
    ("medium", "Balanced reasoning for everyday tasks"),
    ("high", "Deeper reasoning for hard problems"),
    ("xhigh", "The deepest reasoning the model offers"),
];

/// The levels to offer for a model: those its reasoning schema lists (`max` counting as
/// `xhigh`), or all four when it lists none (prompt reasoning takes any budget).
fn levels(schema: Option<&Value>) -> Vec<Value> {
    let listed: Vec<String> = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| {
            p.pointer("/output_config/properties/effort/enum")
                .or_else(|| p.pointer("/reasoning/properties/effort/enum"))
        })
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|e| match e.to_ascii_lowercase().as_str() {
                    "max" => "xhigh".to_owned(),
                    other => other.to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let offered: Vec<&(&str, &str)> = LEVELS
        .iter()
        .filter(|(l, _)| listed.is_empty() || listed.iter().any(|x| x == l))
        .collect();
    let offered = if offered.is_empty() {
        LEVELS.iter().collect()
    } else {
        offered
    };
    offered
        .into_iter()
        .map(|(effort, description)| json!({"effort": effort, "description": description}))
        .collect()
}

/// One model's entry (see the module docs).
fn entry(catalog: &ModelCatalog, slug: &str, priority: usize) -> Value {
    let resolved = catalog.resolve(slug).ok();
    let models = catalog.models();
    let info = resolved
        .as_ref()
        .and_then(|r| models.iter().find(|m| m.model_id == r.kiro_id));
    let display = info
        .and_then(|m| m.model_name.clone())
        .filter(|n| !n.trim().is_empty() && n != slug)
        .unwrap_or_else(|| slug.to_owned());
    let description = info
        .and_then(|m| m.description.clone())
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| format!("{display} through kiro-gateway"));
    let window = catalog
        .limits(slug)
        .and_then(|l| l.max_input_tokens)
        .unwrap_or(DEFAULT_MAX_INPUT_TOKENS);
    let levels = levels(
        resolved
            .as_ref()
            .and_then(|r| r.reasoning_schema.as_deref()),
    );
    let default_level = if levels.iter().any(|l| l["effort"] == "medium") {
        "medium"
    } else {
        levels
            .first()
            .and_then(|l| l["effort"].as_str())
            .unwrap_or("medium")
    };
    json!({
        "slug": slug,
        "display_name": display,
        "description": description,
        "default_reasoning_level": default_level,
        "supported_reasoning_levels": levels,
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": true,
        "priority": priority,
        "upgrade": null,
        "base_instructions": INSTRUCTIONS,
        "model_messages": {"instructions_template": INSTRUCTIONS, "instructions_variables": null},
        "supports_reasoning_summaries": true,
        "support_verbosity": false,
        "default_verbosity": null,
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": true,
        "context_window": window,
        "effective_context_window_percent": 95,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
    })
}

/// `{"models": [...]}` for every model `catalog` lists (as `/v1/models` does), in its order.
pub fn codex_catalog(catalog: &ModelCatalog) -> Value {
    let models: Vec<Value> = catalog
        .listed_ids()
        .iter()
        .enumerate()
        .map(|(i, id)| entry(catalog, id, i))
        .collect();
    json!({ "models": models })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::UnknownModelPolicy;
    use std::time::Duration;

    #[test]
    fn levels_follow_the_schema_and_max_counts_as_xhigh() {
        let efforts = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|l| l["effort"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(efforts(levels(None)), ["low", "medium", "high", "xhigh"]);
        let schema = json!({"properties": {"output_config": {"properties": {"effort":
            {"enum": ["low", "medium", "high", "max"]}}}}});
        assert_eq!(
            efforts(levels(Some(&schema))),
            ["low", "medium", "high", "xhigh"]
        );
        let schema = json!({"properties": {"reasoning": {"properties": {"effort":
            {"enum": ["low", "high"]}}}}});
        assert_eq!(efforts(levels(Some(&schema))), ["low", "high"]);
    }

    #[test]
    fn an_entry_takes_the_window_and_name_of_the_catalogue() {
        let c = ModelCatalog::new(Duration::from_secs(60), UnknownModelPolicy::Reject);
        c.set_models(vec![crate::kiro::types::ModelInfo {
            model_id: "claude-sonnet-4.5".into(),
            model_name: Some("Claude Sonnet 4.5".into()),
            token_limits: Some(crate::kiro::types::TokenLimits {
                max_input_tokens: Some(1_000_000),
                max_output_tokens: Some(64_000),
            }),
            ..Default::default()
        }]);
        let cat = codex_catalog(&c);
        let e = cat["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["slug"] == "claude-sonnet-4.5")
            .unwrap();
        assert_eq!(e["display_name"], "Claude Sonnet 4.5");
        assert_eq!(e["context_window"], 1_000_000);
        assert_eq!(e["apply_patch_tool_type"], "freeform");
        assert_eq!(e["model_messages"]["instructions_template"], INSTRUCTIONS);
    }
}
