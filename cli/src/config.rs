//! Where the CLI finds its analyzer and token: flag > environment > config file > default.
//!
//! The config file is `$XDG_CONFIG_HOME/faultline/cli.toml` (or `~/.config/faultline/cli.toml`), with
//! two optional keys, `analyzer` and `token`. A file that exists but does not parse is an error (a
//! typo silently ignored would send requests to the wrong place); a file that is missing is not.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the analyzer listens when nothing says otherwise (its own `--listen` default).
pub const DEFAULT_ANALYZER: &str = "http://127.0.0.1:9440";

/// Environment variable naming the analyzer URL.
pub const ENV_ANALYZER: &str = "FAULTLINE_ANALYZER";
/// Environment variable holding the bearer token.
pub const ENV_TOKEN: &str = "FAULTLINE_TOKEN";

/// The config file's contents. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Base URL of the analyzer, e.g. `http://analyzer.example:9440`.
    #[serde(default)]
    pub analyzer: Option<String>,
    /// Bearer token for the analyzer's API.
    #[serde(default)]
    pub token: Option<String>,
}

/// Why the configuration could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is not valid: {message} (known keys: analyzer, token)", path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "analyzer URL {url:?} (from {from}) is not an http:// or https:// URL; pass e.g. --analyzer http://127.0.0.1:9440"
    )]
    BadUrl { url: String, from: Source },
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flag => "--analyzer",
            Self::Env => ENV_ANALYZER,
            Self::File => "the config file",
            Self::Default => "the default",
        })
    }
}

/// The settled connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL without a trailing slash.
    pub analyzer: String,
    pub analyzer_from: Source,
    pub token: Option<String>,
}

/// The default config file path, when a home or XDG config directory is known.
pub fn default_path() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base =
        xdg.or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("faultline").join("cli.toml"))
}

/// Reads the config file at `path`; `Ok(default)` when it does not exist.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(ConfigError::Read { path: path.to_path_buf(), source: e }),
    };
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() })
}

/// Settles the settings from the four layers. Empty strings count as unset.
pub fn resolve(
    flag_analyzer: Option<&str>,
    flag_token: Option<&str>,
    env_analyzer: Option<&str>,
    env_token: Option<&str>,
    file: &FileConfig,
) -> Result<Settings, ConfigError> {
    let set = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let (analyzer, analyzer_from) = if let Some(v) = set(flag_analyzer) {
        (v, Source::Flag)
    } else if let Some(v) = set(env_analyzer) {
        (v, Source::Env)
    } else if let Some(v) = set(file.analyzer.as_deref()) {
        (v, Source::File)
    } else {
        (DEFAULT_ANALYZER.to_string(), Source::Default)
    };
    let token = set(flag_token).or_else(|| set(env_token)).or_else(|| set(file.token.as_deref()));
    let analyzer = normalize_url(&analyzer).ok_or(ConfigError::BadUrl { url: analyzer, from: analyzer_from })?;
    Ok(Settings { analyzer, analyzer_from, token })
}

/// `host:port` gets `http://`; a trailing `/` goes. `None` when it is not an http(s) URL.
fn normalize_url(s: &str) -> Option<String> {
    let with_scheme = if s.contains("://") { s.to_string() } else { format!("http://{s}") };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(with_scheme.trim_end_matches('/').to_string())
}

/// Settles the settings from flags, the real environment and the default config file.
pub fn from_env(flag_analyzer: Option<&str>, flag_token: Option<&str>) -> Result<Settings, ConfigError> {
    let file = match default_path() {
        Some(p) => load_file(&p)?,
        None => FileConfig::default(),
    };
    let env_analyzer = std::env::var(ENV_ANALYZER).ok();
    let env_token = std::env::var(ENV_TOKEN).ok();
    resolve(flag_analyzer, flag_token, env_analyzer.as_deref(), env_token.as_deref(), &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(a: Option<&str>, t: Option<&str>) -> FileConfig {
        FileConfig { analyzer: a.map(Into::into), token: t.map(Into::into) }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let f = file(Some("http://file:1"), Some("tf"));
        let s = resolve(Some("http://flag:1"), Some("tflag"), Some("http://env:1"), Some("tenv"), &f).unwrap();
        assert_eq!(
            (s.analyzer.as_str(), s.analyzer_from, s.token.as_deref()),
            ("http://flag:1", Source::Flag, Some("tflag"))
        );
        let s = resolve(None, None, Some("http://env:1"), Some("tenv"), &f).unwrap();
        assert_eq!(
            (s.analyzer.as_str(), s.analyzer_from, s.token.as_deref()),
            ("http://env:1", Source::Env, Some("tenv"))
        );
        let s = resolve(None, None, None, None, &f).unwrap();
        assert_eq!(
            (s.analyzer.as_str(), s.analyzer_from, s.token.as_deref()),
            ("http://file:1", Source::File, Some("tf"))
        );
        let s = resolve(None, None, None, None, &FileConfig::default()).unwrap();
        assert_eq!((s.analyzer.as_str(), s.analyzer_from, s.token), (DEFAULT_ANALYZER, Source::Default, None));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = resolve(Some(""), Some(" "), Some(""), None, &file(Some("http://file:1"), Some("tf"))).unwrap();
        assert_eq!((s.analyzer.as_str(), s.token.as_deref()), ("http://file:1", Some("tf")));
    }

    #[test]
    fn urls_are_normalized_or_refused() {
        let s = resolve(Some("127.0.0.1:9440/"), None, None, None, &FileConfig::default()).unwrap();
        assert_eq!(s.analyzer, "http://127.0.0.1:9440");
        let err = resolve(Some("ftp://x"), None, None, None, &FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--analyzer"), "{err}");
        let err = resolve(None, None, Some("http://"), None, &FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains(ENV_ANALYZER), "{err}");
    }

    #[test]
    fn config_file_missing_is_fine_unknown_key_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cli.toml");
        assert_eq!(load_file(&p).unwrap(), FileConfig::default());
        std::fs::write(&p, "analyzer = \"http://a:1\"\ntoken = \"t\"\n").unwrap();
        assert_eq!(load_file(&p).unwrap(), file(Some("http://a:1"), Some("t")));
        std::fs::write(&p, "analyser = \"http://a:1\"\n").unwrap();
        let err = load_file(&p).unwrap_err().to_string();
        assert!(err.contains("analyser") && err.contains("cli.toml"), "{err}");
    }
}
