//! The DDI documents the agent reads and writes (hawkBit's Direct Device Integration API,
//! as hawkBit and goosebit send it), parsed strictly where the agent acts on a field and
//! leniently elsewhere. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// The poll answer: when to poll again and what the server wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// `config.polling.sleep`, when given.
    pub sleep: Option<Duration>,
    pub deployment: Option<String>,
    pub cancel: Option<String>,
    pub config_data: Option<String>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

#[derive(Deserialize)]
struct RawPoll {
    #[serde(default)]
    config: Option<Value>,
    #[serde(default, rename = "_links")]
    links: BTreeMap<String, Href>,
}

/// Parses the controller base resource.
pub fn parse_poll(body: &[u8]) -> Result<Poll> {
    let raw: RawPoll = serde_json::from_slice(body).context("the poll answer is not DDI JSON")?;
    let sleep = raw
        .config
        .as_ref()
        .and_then(|c| c.pointer("/polling/sleep"))
        .and_then(Value::as_str)
        .map(parse_sleep)
        .transpose()?;
    let mut links = raw.links;
    Ok(Poll {
        sleep,
        deployment: links.remove("deploymentBase").map(|h| h.href),
        cancel: links.remove("cancelAction").map(|h| h.href),
        config_data: links.remove("configData").map(|h| h.href),
    })
}

/// `HH:MM:SS` as DDI writes `config.polling.sleep`.
pub fn parse_sleep(s: &str) -> Result<Duration> {
    let parts: Vec<&str> = s.split(':').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([h, m, sec]) if *m < 60 && *sec < 60 => {
            Ok(Duration::from_secs(h * 3600 + m * 60 + sec))
        }
        _ => bail!("config.polling.sleep {s:?}: not HH:MM:SS"),
    }
}

/// `skip`, `attempt` or `forced` (DDI's `download` and `update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Skip,
    Attempt,
    Forced,
}

impl Handling {
    /// The DDI name: `skip`, `attempt`, `forced`.
    pub fn name(self) -> &'static str {
        match self {
            Handling::Skip => "skip",
            Handling::Attempt => "attempt",
            Handling::Forced => "forced",
        }
    }

    fn parse(v: Option<&str>, what: &str) -> Result<Handling> {
        Ok(match v {
            None | Some("forced") => Handling::Forced,
            Some("attempt") => Handling::Attempt,
            Some("skip") => Handling::Skip,
            Some(o) => bail!("deployment.{what} {o:?}: not skip, attempt or forced"),
        })
    }
}

/// One artifact of a deployment's chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub filename: String,
    pub size: Option<u64>,
    /// Algorithm (`sha256`, `sha1`, `md5`) -> lower-case hex.
    pub hashes: BTreeMap<String, String>,
    /// `download` first, then `download-http`.
    pub link: Option<String>,
}

/// A deployment action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub download: Handling,
    pub update: Handling,
    /// `maintenanceWindow`: `Some(false)` when `unavailable`.
    pub window_open: Option<bool>,
    pub artifacts: Vec<Artifact>,
}

impl Deployment {
    /// The update may be installed now (reboot): `update` is not `skip` and the
    /// maintenance window, if any, is open.
    pub fn may_install(&self) -> bool {
        self.update != Handling::Skip && self.window_open != Some(false)
    }

    /// The artifact whose file name ends in `.hup`; an error naming the files otherwise.
    pub fn hup_artifact(&self) -> Result<&Artifact> {
        let mut found = self
            .artifacts
            .iter()
            .filter(|a| a.filename.to_ascii_lowercase().ends_with(".hup"));
        match (found.next(), found.next()) {
            (Some(a), None) => Ok(a),
            (Some(_), Some(_)) => bail!("deployment {} has more than one .hup artifact", self.id),
            (None, _) => {
                let names: Vec<&str> = self.artifacts.iter().map(|a| a.filename.as_str()).collect();
                bail!(
                    "deployment {} has no artifact whose name ends in .hup (artifacts: {})",
                    self.id,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }
        }
    }
}

/// A DDI id: a string, or a number as some servers send it.
fn id_of(v: Option<&Value>, what: &str) -> Result<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => bail!("{what}: no id"),
    }
}

/// Parses a deploymentBase resource.
pub fn parse_deployment(body: &[u8]) -> Result<Deployment> {
    let v: Value = serde_json::from_slice(body).context("the deployment answer is not DDI JSON")?;
    let id = id_of(v.get("id"), "the deployment")?;
    let d = v
        .get("deployment")
        .with_context(|| format!("deployment {id}: no \"deployment\" object"))?;
    let s = |k: &str| d.get(k).and_then(Value::as_str);
    let window_open = match v.get("maintenanceWindow").or(d.get("maintenanceWindow")) {
        None | Some(Value::Null) => None,
        Some(w) => Some(w.as_str() != Some("unavailable")),
    };
    let mut artifacts = Vec::new();
    for chunk in d
        .get("chunks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for a in chunk
            .get("artifacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(filename) = a.get("filename").and_then(Value::as_str) else {
                bail!("deployment {id}: an artifact without a filename");
            };
            let hashes = a
                .get("hashes")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| {
                            Some((k.to_ascii_lowercase(), v.as_str()?.to_ascii_lowercase()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let link = ["download", "download-http"]
                .iter()
                .find_map(|k| {
                    a.pointer(&format!("/_links/{k}/href"))
                        .and_then(Value::as_str)
                })
                .map(str::to_string);
            artifacts.push(Artifact {
                filename: filename.to_string(),
                size: a.get("size").and_then(Value::as_u64),
                hashes,
                link,
            });
        }
    }
    Ok(Deployment {
        download: Handling::parse(s("download"), "download")?,
        update: Handling::parse(s("update"), "update")?,
        window_open,
        artifacts,
        id,
    })
}

/// Parses a cancelAction resource: (its id, the action to stop).
pub fn parse_cancel(body: &[u8]) -> Result<(String, String)> {
    let v: Value = serde_json::from_slice(body).context("the cancel answer is not DDI JSON")?;
    let id = id_of(v.get("id"), "the cancel action")?;
    let stop = id_of(
        v.pointer("/cancelAction/stopId"),
        "the cancel action's stopId",
    )?;
    Ok((id, stop))
}

/// DDI's feedback `execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    Proceeding,
    Closed,
    Rejected,
}

/// DDI's feedback `result.finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    None,
    Success,
    Failure,
}

/// A feedback body (deployment or cancel): `progress` is (count, of).
pub fn feedback(
    id: &str,
    execution: Execution,
    finished: Finished,
    progress: Option<(u32, u32)>,
    details: &[String],
) -> Vec<u8> {
    let execution = match execution {
        Execution::Proceeding => "proceeding",
        Execution::Closed => "closed",
        Execution::Rejected => "rejected",
    };
    let finished = match finished {
        Finished::None => "none",
        Finished::Success => "success",
        Finished::Failure => "failure",
    };
    let mut result = json!({ "finished": finished });
    if let Some((cnt, of)) = progress {
        result["progress"] = json!({ "cnt": cnt, "of": of });
    }
    serde_json::to_vec(&json!({
        "id": id,
        "status": { "execution": execution, "result": result, "details": details },
    }))
    .unwrap_or_default()
}

/// The configData body: `attributes` merged.
pub fn config_data(attributes: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "mode": "merge", "data": attributes })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_and_sleep() {
        let p = parse_poll(br#"{"config":{"polling":{"sleep":"00:05:07"}},"_links":{"deploymentBase":{"href":"http://s/d/3"},"configData":{"href":"http://s/c"}}}"#).unwrap();
        assert_eq!(p.sleep, Some(Duration::from_secs(307)));
        assert_eq!(p.deployment.as_deref(), Some("http://s/d/3"));
        assert_eq!(p.config_data.as_deref(), Some("http://s/c"));
        assert_eq!(p.cancel, None);
        assert!(parse_sleep("5").is_err() && parse_sleep("00:61:00").is_err());
        assert!(format!("{:#}", parse_poll(b"{not json").unwrap_err()).contains("not DDI JSON"));
    }

    #[test]
    fn deployment_shapes() {
        // hawkBit: every hash, both links, a closed maintenance window, a numeric-looking id.
        let d = parse_deployment(br#"{"id":"12","deployment":{"download":"forced","update":"skip","maintenanceWindow":"unavailable","chunks":[{"part":"os","artifacts":[
            {"filename":"notes.txt","hashes":{"sha1":"aa"},"_links":{}},
            {"filename":"v2.hup","size":9,"hashes":{"SHA256":"AB","md5":"cd","sha1":"ef"},"_links":{"download-http":{"href":"http://h/a"},"download":{"href":"https://h/a"}}}]}]}}"#).unwrap();
        assert_eq!(d.id, "12");
        assert_eq!(
            (d.download, d.update, d.window_open),
            (Handling::Forced, Handling::Skip, Some(false))
        );
        assert!(!d.may_install());
        let a = d.hup_artifact().unwrap();
        assert_eq!(a.link.as_deref(), Some("https://h/a"));
        assert_eq!(a.hashes["sha256"], "ab");
        // goosebit: a number id would also do; sha1 only, `download` only.
        let g = parse_deployment(br#"{"id":4,"deployment":{"download":"forced","update":"forced","chunks":[{"artifacts":[{"filename":"x.hup","hashes":{"sha1":"ff"},"size":3,"_links":{"download":{"href":"http://g/f"}}}]}]}}"#).unwrap();
        assert_eq!(g.id, "4");
        assert!(g.may_install());
        let none = parse_deployment(br#"{"id":"5","deployment":{"chunks":[{"artifacts":[{"filename":"a.swu","_links":{}}]}]}}"#).unwrap();
        assert!(
            format!("{}", none.hup_artifact().unwrap_err())
                .contains("no artifact whose name ends in .hup (artifacts: a.swu)")
        );
        assert!(parse_deployment(br#"{"id":"5","deployment":{"update":"now"}}"#).is_err());
        assert!(parse_deployment(br#"{"deployment":{}}"#).is_err());
    }

    #[test]
    fn cancel_and_feedback() {
        assert_eq!(
            parse_cancel(br#"{"id":"9","cancelAction":{"stopId":"8"}}"#).unwrap(),
            ("9".into(), "8".into())
        );
        let f: Value = serde_json::from_slice(&feedback(
            "8",
            Execution::Proceeding,
            Finished::None,
            Some((1, 3)),
            &["x".into()],
        ))
        .unwrap();
        assert_eq!(f["status"]["execution"], "proceeding");
        assert_eq!(f["status"]["result"]["progress"]["of"], 3);
        assert_eq!(f["status"]["details"][0], "x");
    }
}
