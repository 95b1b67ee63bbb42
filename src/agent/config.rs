//! `/etc/hup/agent.json`: which DDI server the agent talks to, as whom, and what it tells
//! the server about the device (docs/fleet.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::Digest;

/// The configuration's default place.
pub const AGENT_JSON: &str = "/etc/hup/agent.json";
/// Where the controller id is derived from when the configuration names none.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// The agent's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The server's base URL (`https://hawkbit.example.com`), without the tenant.
    pub server: String,
    /// The DDI tenant (`DEFAULT`).
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// This device's controller id (default: derived from `/etc/machine-id`).
    #[serde(default)]
    pub controller_id: Option<String>,
    /// `Authorization: TargetToken …`, the device's own token.
    #[serde(default)]
    pub target_token: Option<String>,
    /// `Authorization: GatewayToken …`, the tenant's gateway token.
    #[serde(default)]
    pub gateway_token: Option<String>,
    /// Trust only the certificates of this PEM file for https.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Sent as configData, together with `compatible` and `sw_version`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_tenant() -> String {
    "DEFAULT".into()
}

impl AgentConfig {
    /// Reads and checks the configuration.
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the agent configuration {}", path.display()))?;
        let c: AgentConfig = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the agent configuration {}", path.display()))?;
        c.check()
            .with_context(|| format!("the agent configuration {}", path.display()))?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        let lower = self.server.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            bail!("server {:?}: not an http:// or https:// URL", self.server);
        }
        for (what, v) in [
            ("tenant", Some(&self.tenant)),
            ("controller_id", self.controller_id.as_ref()),
        ] {
            if let Some(v) = v
                && !plain(v)
            {
                bail!("{what} {v:?}: use 1 to 128 of [A-Za-z0-9._:-]");
            }
        }
        if self.target_token.is_some() && self.gateway_token.is_some() {
            bail!("give target_token or gateway_token, not both");
        }
        Ok(())
    }

    /// The configured controller id, else one derived from `machine_id` (the file's
    /// content): `hup-` and 16 hex digits of SHA-256 over `hup-agent:` and it, so the
    /// machine id itself does not leave the device.
    pub fn controller_id(&self, machine_id: &Path) -> Result<String> {
        if let Some(id) = &self.controller_id {
            return Ok(id.clone());
        }
        let raw = std::fs::read_to_string(machine_id).with_context(|| {
            format!(
                "no controller_id in the agent configuration, and reading {}",
                machine_id.display()
            )
        })?;
        let id = raw.trim();
        if id.is_empty() {
            bail!("{} is empty: set controller_id", machine_id.display());
        }
        let digest = sha2::Sha256::digest(format!("hup-agent:{id}").as_bytes());
        Ok(format!("hup-{}", &hex::encode(digest)[..16]))
    }

    /// The `Authorization` header value, if a token is configured.
    pub fn authorization(&self) -> Option<String> {
        match (&self.target_token, &self.gateway_token) {
            (Some(t), _) => Some(format!("TargetToken {t}")),
            (None, Some(g)) => Some(format!("GatewayToken {g}")),
            (None, None) => None,
        }
    }

    /// `SERVER/TENANT/controller/v1/ID`: the base of every DDI resource.
    pub fn base_url(&self, controller_id: &str) -> String {
        format!(
            "{}/{}/controller/v1/{}",
            self.server.trim_end_matches('/'),
            self.tenant,
            controller_id
        )
    }
}

fn plain(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(j: &str) -> Result<AgentConfig> {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("agent.json");
        std::fs::write(&p, j).unwrap();
        AgentConfig::load(&p)
    }

    #[test]
    fn keys_defaults_and_refusals() {
        let c = parse(r#"{"server":"https://h:8/","controller_id":"dev-1","target_token":"t","attributes":{"site":"x"}}"#).unwrap();
        assert_eq!(c.tenant, "DEFAULT");
        assert_eq!(
            c.base_url("dev-1"),
            "https://h:8/DEFAULT/controller/v1/dev-1"
        );
        assert_eq!(c.authorization().as_deref(), Some("TargetToken t"));
        assert_eq!(c.attributes["site"], "x");
        let e = |j: &str| format!("{:#}", parse(j).unwrap_err());
        assert!(e(r#"{"server":"ftp://h"}"#).contains("not an http"));
        assert!(e(r#"{"server":"http://h","tenant":"a/b"}"#).contains("tenant"));
        assert!(
            e(r#"{"server":"http://h","target_token":"a","gateway_token":"b"}"#)
                .contains("not both")
        );
        assert!(e(r#"{"server":"http://h","polling":1}"#).contains("unknown field"));
        let g = parse(r#"{"server":"http://h","gateway_token":"g"}"#).unwrap();
        assert_eq!(g.authorization().as_deref(), Some("GatewayToken g"));
    }

    #[test]
    fn controller_id_from_machine_id() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("machine-id");
        std::fs::write(&m, "0123456789abcdef0123456789abcdef\n").unwrap();
        let c = parse(r#"{"server":"http://h"}"#).unwrap();
        let id = c.controller_id(&m).unwrap();
        assert!(id.starts_with("hup-") && id.len() == 20, "{id}");
        assert!(!id.contains("0123456789abcdef"));
        assert_eq!(id, c.controller_id(&m).unwrap(), "stable");
        assert!(c.controller_id(&t.path().join("none")).is_err());
    }
}
