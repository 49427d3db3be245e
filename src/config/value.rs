//! How one setting's value is read: from an environment variable (text) and from a
//! `config.toml` value. Every type a setting of the table has implements [`SettingValue`]; its
//! errors are worded for the user and say what was given, the caller adds the setting's name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::accounts::{QuotaPark, Strategy};
use crate::api::thinking::{ReasoningMode, ThinkingMode};
use crate::auth::ProfileArnPolicy;
use crate::kiro::ApiProtocol;
use crate::layers::DebugMode;
use crate::models::UnknownModelPolicy;
use crate::Secret;

use super::{AccountConfig, ClientKeyConfig};

/// A value one setting can hold.
pub trait SettingValue: Sized {
    /// Parse an environment value (already stripped of surrounding quotes).
    fn from_env(v: &str) -> Result<Self, String>;

    /// Apply an environment value over the value in force (by default: replace it).
    fn apply_env(&mut self, v: &str) -> Result<(), String> {
        *self = Self::from_env(v)?;
        Ok(())
    }

    /// Read a `config.toml` value.
    fn from_toml(v: toml::Value) -> Result<Self, String>;
}

/// `config.toml` values read through serde.
fn serde_toml<T: serde::de::DeserializeOwned>(v: toml::Value) -> Result<T, String> {
    v.try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())
}

/// A `config.toml` value as an error message shows it.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// The setting is a table of `config.toml`, with no environment variable.
fn toml_only<T>() -> Result<T, String> {
    Err("can only be set in config.toml".into())
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn from_env(v: &str) -> Result<Self, String> {
                v.trim()
                    .parse()
                    .map_err(|e| format!("{v:?} is not a valid number ({e})"))
            }
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                serde_toml(v)
            }
        }
    )*};
}
number!(u16, u32, u64, usize, i32, f64);

/// Booleans: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, `enabled`/`disabled` (any case).
/// Anything else is an error. An empty variable leaves the value in force (before, an empty
/// `FAKE_REASONING` meant on and an empty `METRICS_PUBLIC` off: both their defaults).
impl SettingValue for bool {
    fn from_env(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "enabled" => Ok(true),
            "false" | "0" | "no" | "off" | "disabled" => Ok(false),
            _ => Err(format!(
                "{v:?} is not a boolean (true or false, 1 or 0, yes or no, on or off)"
            )),
        }
    }
    fn apply_env(&mut self, v: &str) -> Result<(), String> {
        if !v.trim().is_empty() {
            *self = Self::from_env(v)?;
        }
        Ok(())
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(b),
            toml::Value::String(s) => Self::from_env(&s),
            other => Err(format!("{} is not a boolean", shown(&other))),
        }
    }
}

impl SettingValue for String {
    fn from_env(v: &str) -> Result<Self, String> {
        Ok(v.to_owned())
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        serde_toml(v)
    }
}

impl SettingValue for PathBuf {
    fn from_env(v: &str) -> Result<Self, String> {
        Ok(PathBuf::from(v))
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        serde_toml(v)
    }
}

impl SettingValue for Secret {
    fn from_env(v: &str) -> Result<Self, String> {
        Ok(Secret::new(v))
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        serde_toml(v)
    }
}

/// An empty variable unsets an optional setting.
impl<T: SettingValue> SettingValue for Option<T> {
    fn from_env(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            Ok(None)
        } else {
            T::from_env(v).map(Some)
        }
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        T::from_toml(v).map(Some)
    }
}

/// A comma-separated list in the environment (blanks around entries and empty entries
/// ignored), an array in `config.toml`.
impl SettingValue for Vec<String> {
    fn from_env(v: &str) -> Result<Self, String> {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        serde_toml(v)
    }
}

/// `MODEL_ALIASES`: `alias=model` entries separated by commas (blanks around either ignored),
/// added to the ones in force (the same alias in the variable wins).
impl SettingValue for BTreeMap<String, String> {
    fn from_env(v: &str) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        out.apply_env(v)?;
        Ok(out)
    }
    fn apply_env(&mut self, v: &str) -> Result<(), String> {
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((a, m)) if !a.trim().is_empty() && !m.trim().is_empty() => {
                    self.insert(a.trim().to_owned(), m.trim().to_owned());
                }
                _ => {
                    return Err(format!(
                        "{entry:?} is not alias=model (the form is alias=model,alias2=model2)"
                    ))
                }
            }
        }
        Ok(())
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        serde_toml(v)
    }
}

macro_rules! toml_tables {
    ($($t:ty),*) => {$(
        impl SettingValue for Vec<$t> {
            fn from_env(_: &str) -> Result<Self, String> {
                toml_only()
            }
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                serde_toml(v)
            }
        }
    )*};
}
toml_tables!(AccountConfig, ClientKeyConfig);

/// Settings with a fixed set of values, read through their `FromStr` (which words the error
/// and accepts the empty string as the default); in `config.toml` they are strings.
macro_rules! from_str {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn from_env(v: &str) -> Result<Self, String> {
                v.parse()
            }
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::String(s) => s.parse(),
                    other => Err(format!("{} is not a string", shown(&other))),
                }
            }
        }
    )*};
}
from_str!(
    ApiProtocol,
    UnknownModelPolicy,
    ThinkingMode,
    ReasoningMode,
    DebugMode,
    Strategy,
    LogLevel,
    LogFormat
);

/// `"monthly"` or a number of seconds (a string in the environment; in `config.toml` a
/// string or a number).
impl SettingValue for QuotaPark {
    fn from_env(v: &str) -> Result<Self, String> {
        v.parse()
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => s.parse(),
            toml::Value::Integer(n) => n.to_string().parse(),
            toml::Value::Float(f) => f.to_string().parse(),
            other => Err(format!(
                "{} is not \"monthly\" or a number of seconds",
                shown(&other)
            )),
        }
    }
}

impl SettingValue for ProfileArnPolicy {
    fn from_env(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(ProfileArnPolicy::Auto),
            "always" => Ok(ProfileArnPolicy::Always),
            "never" => Ok(ProfileArnPolicy::Never),
            other => Err(format!("{other:?} is not auto, always or never")),
        }
    }
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::from_env(&s),
            other => Err(format!("{} is not a string", shown(&other))),
        }
    }
}

/// `LOG_LEVEL`: the least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    /// `warning` or `warn`.
    Warn,
    /// `error` or `critical` (the Python original's highest level).
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" | "" => Ok(LogLevel::Info),
            "warning" | "warn" => Ok(LogLevel::Warn),
            "error" | "critical" => Ok(LogLevel::Error),
            other => Err(format!(
                "{other:?} is not trace, debug, info, warning or error"
            )),
        }
    }
}

/// `LOG_FORMAT`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not text or json")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_the_usual_words_and_refuse_the_rest() {
        for t in ["true", "TRUE", " 1", "yes", "On", "enabled"] {
            assert_eq!(bool::from_env(t), Ok(true), "{t}");
        }
        for f in ["false", "0", "No", "off", "disabled "] {
            assert_eq!(bool::from_env(f), Ok(false), "{f}");
        }
        assert_eq!(
            bool::from_env("maybe"),
            Err("\"maybe\" is not a boolean (true or false, 1 or 0, yes or no, on or off)".into())
        );
        // empty: the value in force stays
        let mut b = true;
        b.apply_env("").unwrap();
        assert!(b);
        assert_eq!(bool::from_toml(toml::Value::Boolean(false)), Ok(false));
        assert_eq!(bool::from_toml(toml::Value::String("yes".into())), Ok(true));
        assert!(bool::from_toml(toml::Value::Integer(2)).is_err());
    }
}
