//! The settings file (`mesh --config FILE`) as one typed schema: `mesh` reads it, and `mesh bench` and `cargo xtask
//! chaos` write theirs from it, so a field is named once and a value never goes through hand-written TOML.
//! Durations stay text here (`"5s"`, `"250ms"`): the reader's errors name the field and quote what was written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file: every field optional (a flag or environment variable wins over it, the seed's default fills
/// what neither gives); unknown fields are refused so a typo is not silently ignored.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "each field is the flag of the same name, documented by `mesh --help` and docs/")]
pub struct SettingsFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_fetch_wait: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_linger: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kafka_properties: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_properties_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_security_protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_mechanism: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_partitions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus_partitions: Option<u32>,
    #[serde(default)]
    pub topology: TopologySettings,
    #[serde(default)]
    pub consensus: ConsensusSettings,
    #[serde(default)]
    pub agent: AgentSettings,
}

/// `[topology]`: the SlimeMold parameters and the topology manager's timings.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "each field is the flag of the same name, documented by `mesh topology --help`")]
pub struct TopologySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reinforcement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<String>,
}

/// `[consensus]`: the Bee consensus parameters and the consensus manager's timings.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "each field is the flag of the same name, documented by `mesh consensus --help`")]
pub struct ConsensusSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<String>,
}

/// `[agent]`: the agents' heartbeat and the scenario's load.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "each field is the flag of the same name, documented by `mesh agent --help`")]
pub struct AgentSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal_every: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_after_members: Option<usize>,
}

impl SettingsFile {
    /// Reads a settings file's text; the error names the line and the field.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file's text, headed by `comment` (who wrote it and why), for a deployment `mesh` will read back.
    pub fn to_toml(&self, comment: &str) -> Result<String, toml::ser::Error> {
        Ok(format!("# {comment}\n{}", toml::to_string(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_as_itself() {
        let file = SettingsFile {
            kafka: Some("127.0.0.1:9092".into()),
            kafka_properties: [("socket.keepalive.enable".to_owned(), "true".to_owned())].into(),
            topic_prefix: Some("meshbench-1".into()),
            messages_partitions: Some(8),
            topology: TopologySettings { decay_interval: Some("200ms".into()), ..TopologySettings::default() },
            agent: AgentSettings { rate: Some(2.5), start_after_members: Some(500), ..AgentSettings::default() },
            ..SettingsFile::default()
        };
        let text = file.to_toml("written by a test").expect("serialises");
        assert!(text.starts_with("# written by a test\n"), "{text}");
        assert!(!text.contains("redis"), "fields not given are not written: {text}");
        assert_eq!(SettingsFile::parse(&text).expect("reads back"), file, "{text}");
    }

    #[test]
    fn a_misspelt_field_is_refused_by_name() {
        let err = SettingsFile::parse("[topology]\ndecay_rat = 0.1\n").expect_err("a typo is refused");
        assert!(err.to_string().contains("decay_rat"), "{err}");
    }
}
