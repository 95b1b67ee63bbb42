//! `wifi-config-json-to-networkmanager`: the network settings of a connman-era system
//! (resinOS 1.x style) as NetworkManager keyfiles (docs/migrations.md).
//!
//! Inputs, all optional:
//! - `config.json` at the root of the boot partition, else of the data partition:
//!   `files."network/network.config"` (a connman provisioning file), else
//!   `wifiSsid`/`wifiKey`;
//! - WiFi Connect's `network.config` files: `DATA/resin-data/*/network.config`.
//!
//! Outputs: `resin-wifi` (config.json WiFi), `resin-wifi-connect` (WiFi Connect),
//! `resin-static-ethernet` (a static ethernet service); a second one of a kind gets `-2`,
//! and so on.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::connman::{self, Ipv4, Ipv6, Medium, Security, Service};
use super::migration::{Check, Migration, MigrationContext, Report};
use super::nm::Connection;

#[derive(Debug)]
pub struct WifiToNetworkManager;

const ID: &str = "wifi-config-json-to-networkmanager";
const NETWORK_CONFIG: &str = "network/network.config";

impl Migration for WifiToNetworkManager {
    fn id(&self) -> &'static str {
        ID
    }

    fn check(&self, ctx: &MigrationContext) -> Result<Check> {
        Ok(plan(ctx)?.check)
    }

    fn run(&self, ctx: &MigrationContext) -> Result<Report> {
        let plan = plan(ctx)?;
        if !plan.check.is_ok() {
            bail!("nothing was written: {}", plan.check.problems.join("; "));
        }
        for n in &plan.check.notes {
            log::info!("{ID}: {n}");
        }
        let written = write_all(&ctx.connections_dir, &plan.files)?;
        for w in &written {
            log::info!("{ID}: wrote {}", w.display());
        }
        if written.is_empty() {
            log::info!("{ID}: no network settings to migrate");
        }
        Ok(Report {
            id: ID.to_string(),
            sources: plan.check.sources,
            written,
            notes: plan.check.notes,
        })
    }
}

#[derive(Default)]
struct Plan {
    check: Check,
    /// (file name, keyfile text)
    files: Vec<(String, String)>,
    /// Uses of each base name, for `-2`, `-3`...
    names: HashMap<&'static str, usize>,
}

impl Plan {
    fn add(&mut self, ctx: &MigrationContext, base: &'static str, service: Service) {
        let n = self.names.entry(base).or_insert(0);
        *n += 1;
        let id = if *n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let text = Connection {
            id: id.clone(),
            service,
        }
        .keyfile();
        self.check.outputs.push(ctx.connections_dir.join(&id));
        self.files.push((id, text));
    }

    /// Adds the connections for `services` read from `source`.
    fn services(
        &mut self,
        ctx: &MigrationContext,
        source: &str,
        wifi_base: &'static str,
        mut services: Vec<Service>,
    ) {
        // connman's conventional services first, then the others in file order.
        services.sort_by_key(|s| !s.group.starts_with("service_home_"));
        for s in services {
            if !s.ignored_keys.is_empty() {
                self.check.notes.push(format!(
                    "{source} [{}]: not migrated: {}",
                    s.group,
                    s.ignored_keys.join(", ")
                ));
            }
            let is_static = matches!(s.ipv4, Ipv4::Static { .. } | Ipv4::Off)
                || matches!(s.ipv6, Ipv6::Static { .. } | Ipv6::Off);
            match s.medium {
                Medium::Wifi => self.add(ctx, wifi_base, s),
                Medium::Ethernet if is_static => self.add(ctx, "resin-static-ethernet", s),
                Medium::Ethernet => self.check.notes.push(format!(
                    "{source} [{}]: ethernet with DHCP needs no connection (NetworkManager's default){}",
                    s.group,
                    if s.nameservers.is_empty() {
                        ""
                    } else {
                        "; its Nameservers are not migrated"
                    }
                )),
            }
        }
    }
}

/// Reads a file: `None` when it does not exist, `Some(Err)` when it is not UTF-8 text.
fn read_text(path: &Path) -> Result<Option<Result<String, String>>> {
    match fs::read(path) {
        Ok(b) => {
            Ok(Some(String::from_utf8(b).map_err(|_| {
                format!("{}: not UTF-8 text", path.display())
            })))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn plan(ctx: &MigrationContext) -> Result<Plan> {
    let mut p = Plan::default();
    let mut used: Option<PathBuf> = None;
    for path in [
        ctx.boot_root.join("config.json"),
        ctx.data_root.join("config.json"),
    ] {
        let Some(text) = read_text(&path)? else {
            continue;
        };
        if let Some(first) = &used {
            p.check.notes.push(format!(
                "{} is ignored: {} is used",
                path.display(),
                first.display()
            ));
            continue;
        }
        p.check.sources.push(path.clone());
        match text {
            Ok(t) => from_config_json(ctx, &mut p, &path, &t),
            Err(e) => p.check.problems.push(e),
        }
        used = Some(path);
    }
    for path in wifi_connect_files(&ctx.data_root)? {
        p.check.sources.push(path.clone());
        let source = path.display().to_string();
        let parsed = match read_text(&path)? {
            Some(Ok(t)) => connman::parse(&t).map_err(|e| format!("{source}: {e:#}")),
            Some(Err(e)) => Err(e),
            None => Ok(Vec::new()),
        };
        match parsed {
            Ok(services) => p.services(ctx, &source, "resin-wifi-connect", services),
            Err(e) => p.check.problems.push(e),
        }
    }
    Ok(p)
}

/// `DATA/resin-data/*/network.config`, sorted.
fn wifi_connect_files(data_root: &Path) -> Result<Vec<PathBuf>> {
    let dir = data_root.join("resin-data");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let f = e.path().join("network.config");
        if f.is_file() {
            out.push(f);
        }
    }
    out.sort();
    Ok(out)
}

fn from_config_json(ctx: &MigrationContext, p: &mut Plan, path: &Path, text: &str) {
    let src = path.display().to_string();
    if let Err(e) = config_json_services(ctx, p, &src, text) {
        p.check.problems.push(format!("{src}: {e:#}"));
    }
}

fn config_json_services(ctx: &MigrationContext, p: &mut Plan, src: &str, text: &str) -> Result<()> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let obj = v.as_object().context("not a JSON object")?;
    let string = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!("{key:?} is not a string"),
        }
    };
    let mut services = Vec::new();
    match obj.get("files") {
        None | Some(Value::Null) => {}
        Some(Value::Object(files)) => match files.get(NETWORK_CONFIG) {
            None | Some(Value::Null) => {}
            Some(Value::String(nc)) => {
                services =
                    connman::parse(nc).with_context(|| format!("files.{NETWORK_CONFIG:?}"))?;
            }
            Some(_) => bail!("files.{NETWORK_CONFIG:?} is not a string"),
        },
        Some(_) => bail!("\"files\" is not an object"),
    }
    let ssid = string("wifiSsid")?;
    let key = string("wifiKey")?;
    let has_wifi = services.iter().any(|s| s.medium == Medium::Wifi);
    match ssid {
        Some(ssid) if has_wifi => p.check.notes.push(format!(
            "{src}: wifiSsid {ssid:?} is ignored: files.{NETWORK_CONFIG:?} has a wifi service, which connman used"
        )),
        Some(ssid) if !ssid.is_empty() => services.push(wifi_from_keys(ssid, key)?),
        _ => {}
    }
    p.services(ctx, src, "resin-wifi", services);
    Ok(())
}

/// The service 1.x made from `wifiSsid`/`wifiKey` (hidden, as it wrote `Hidden = true`).
fn wifi_from_keys(ssid: String, key: Option<String>) -> Result<Service> {
    if ssid.len() > 32 {
        bail!("wifiSsid has {} bytes (at most 32)", ssid.len());
    }
    let security = match key.filter(|k| !k.is_empty()) {
        Some(k) => Security::Psk(connman::check_psk(k).context("wifiKey")?),
        None => Security::Open,
    };
    Ok(Service {
        group: "service_home_wifi".into(),
        medium: Medium::Wifi,
        ssid: ssid.into_bytes(),
        hidden: true,
        security,
        ipv4: Ipv4::Dhcp,
        ipv6: Ipv6::Auto,
        nameservers: Vec::new(),
        search_domains: Vec::new(),
        mac: None,
        ignored_keys: Vec::new(),
    })
}

/// Writes every file to `.NAME.hup-tmp` (mode 0600, fsynced), then renames them all and
/// fsyncs the directory. On an error before the renames the temporary files are removed
/// and no output is touched.
fn write_all(dir: &Path, files: &[(String, String)]) -> Result<Vec<PathBuf>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut stage = || -> Result<()> {
        for (name, text) in files {
            let tmp = dir.join(format!(".{name}.hup-tmp"));
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", tmp.display()));
                }
                _ => {}
            }
            staged.push((tmp.clone(), dir.join(name)));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        Ok(())
    };
    if let Err(e) = stage() {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
        return Err(e);
    }
    let mut written = Vec::new();
    for (tmp, dst) in staged {
        fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
        written.push(dst);
    }
    crate::fsutil::sync_dir(dir)?;
    Ok(written)
}
