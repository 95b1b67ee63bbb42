//! connman provisioning files (`network.config`): `[service_*]` groups describing a WiFi or
//! ethernet service, read the way connman reads them (GLib key file; `Passphrase` keeps its
//! trailing spaces, every other value is trimmed at the end).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};

use super::keyfile::{Group, KeyFile};

/// What kind of service a group describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Wifi,
    Ethernet,
}

/// WiFi security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    Open,
    /// WPA/WPA2 personal with a passphrase (8-63 characters) or a 64-digit hex key.
    Psk(String),
    /// WEP with a key (5 or 13 characters, or 10 or 26 hex digits).
    Wep(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv4 {
    Dhcp,
    Off,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6 {
    Auto,
    Off,
    Static {
        address: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
    },
}

/// One `[service_*]` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The group name, e.g. `service_home_wifi`.
    pub group: String,
    pub medium: Medium,
    /// WiFi: the SSID bytes (from `SSID` hex when present, else `Name`).
    pub ssid: Vec<u8>,
    pub hidden: bool,
    pub security: Security,
    pub ipv4: Ipv4,
    pub ipv6: Ipv6,
    pub nameservers: Vec<IpAddr>,
    pub search_domains: Vec<String>,
    /// `MAC`: binds the service to the interface with this address.
    pub mac: Option<String>,
    /// Keys that were read but have no NetworkManager equivalent here.
    pub ignored_keys: Vec<String>,
}

/// Keys this reader understands; others are reported as ignored.
const KNOWN: &[&str] = &[
    "Type",
    "Name",
    "SSID",
    "Passphrase",
    "Security",
    "Hidden",
    "IPv4",
    "IPv6",
    "Nameservers",
    "SearchDomains",
    "MAC",
];

/// The services of a provisioning file, in file order. Groups not named `service_*`
/// (connman's `[global]`) are skipped. Errors name the group and key.
pub fn parse(text: &str) -> Result<Vec<Service>> {
    let kf = KeyFile::parse(text)?;
    kf.groups
        .iter()
        .filter(|g| g.name.starts_with("service_"))
        .map(|g| service(g).with_context(|| format!("[{}]", g.name)))
        .collect()
}

/// A value as connman reads it: decoded, and trimmed at the end except for passphrases.
fn value(g: &Group, key: &str) -> Result<Option<String>> {
    Ok(g.get(key)?.map(|v| {
        if key == "Passphrase" {
            v
        } else {
            v.trim_end().to_string()
        }
    }))
}

fn service(g: &Group) -> Result<Service> {
    let medium = match value(g, "Type")?.as_deref() {
        Some("wifi") => Medium::Wifi,
        Some("ethernet") => Medium::Ethernet,
        Some(other) => bail!("Type={other} is not migrated (only wifi and ethernet are)"),
        None => bail!("no Type"),
    };
    let mut s = Service {
        group: g.name.clone(),
        medium,
        ssid: Vec::new(),
        hidden: false,
        security: Security::Open,
        ipv4: parse_ipv4(value(g, "IPv4")?.as_deref())?,
        ipv6: parse_ipv6(value(g, "IPv6")?.as_deref())?,
        nameservers: list(value(g, "Nameservers")?)
            .iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("Nameservers: {a:?} is not an IP address"))
            })
            .collect::<Result<_>>()?,
        search_domains: list(value(g, "SearchDomains")?),
        mac: value(g, "MAC")?.map(|m| parse_mac(&m)).transpose()?,
        ignored_keys: g
            .entries
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, _)| k.clone())
            .collect(),
    };
    if medium == Medium::Ethernet {
        for k in ["Name", "SSID", "Passphrase", "Security", "Hidden"] {
            if g.raw(k).is_some() {
                s.ignored_keys.push(k.to_string());
            }
        }
        return Ok(s);
    }
    s.ssid = match (value(g, "SSID")?, value(g, "Name")?) {
        (Some(hex), _) => hex::decode(&hex).with_context(|| format!("SSID={hex} is not hex"))?,
        (None, Some(name)) => name.into_bytes(),
        (None, None) => bail!("a wifi service without Name or SSID"),
    };
    if s.ssid.is_empty() || s.ssid.len() > 32 {
        bail!("the SSID has {} bytes (1 to 32 allowed)", s.ssid.len());
    }
    s.hidden = match value(g, "Hidden")?.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => bail!("Hidden={other} is not true or false"),
    };
    let pass = value(g, "Passphrase")?.filter(|p| !p.is_empty());
    s.security = match (value(g, "Security")?.as_deref(), pass) {
        (None | Some("psk"), Some(p)) => Security::Psk(check_psk(p)?),
        (Some("psk"), None) => bail!("Security=psk without a Passphrase"),
        (None | Some("none"), _) => Security::Open,
        (Some("wep"), Some(p)) => Security::Wep(check_wep(p)?),
        (Some("wep"), None) => bail!("Security=wep without a Passphrase"),
        (Some(other), _) => bail!("Security={other} is not migrated (none, psk and wep are)"),
    };
    Ok(s)
}

/// A comma (or semicolon) separated list, trimmed, without empty items.
fn list(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) fn check_psk(p: String) -> Result<String> {
    let hex64 = p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit());
    let ascii = (8..=63).contains(&p.len()) && p.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !hex64 && !ascii {
        bail!(
            "the Passphrase is not a WPA passphrase (8-63 printable ASCII characters) or a 64-digit hex key"
        );
    }
    Ok(p)
}

fn check_wep(p: String) -> Result<String> {
    let ok = match p.len() {
        5 | 13 => p.bytes().all(|b| (0x20..0x7f).contains(&b)),
        10 | 26 => p.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    };
    if !ok {
        bail!("the Passphrase is not a WEP key (5 or 13 characters, 10 or 26 hex digits)");
    }
    Ok(p)
}

fn parse_mac(m: &str) -> Result<String> {
    let parts: Vec<&str> = m.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        bail!("MAC={m} is not a MAC address (xx:xx:xx:xx:xx:xx)");
    }
    Ok(m.to_ascii_uppercase())
}

/// `off`, `dhcp` or `ADDRESS/NETMASK[/GATEWAY]` (netmask dotted or a prefix length).
fn parse_ipv4(v: Option<&str>) -> Result<Ipv4> {
    let v = match v {
        None | Some("dhcp") => return Ok(Ipv4::Dhcp),
        Some("off") => return Ok(Ipv4::Off),
        Some(v) => v,
    };
    let parts: Vec<&str> = v.split('/').map(str::trim).collect();
    let bad = || format!("IPv4={v} is not off, dhcp or address/netmask[/gateway]");
    if !(2..=3).contains(&parts.len()) {
        bail!("{}", bad());
    }
    let address: Ipv4Addr = parts[0].parse().with_context(bad)?;
    let prefix = match parts[1].parse::<u8>() {
        Ok(p) if p <= 32 => p,
        Ok(_) => bail!("{}", bad()),
        Err(_) => {
            let mask = u32::from(parts[1].parse::<Ipv4Addr>().with_context(bad)?);
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                bail!("IPv4={v}: netmask {} is not contiguous", parts[1]);
            }
            mask.leading_ones() as u8
        }
    };
    let gateway = match parts.get(2) {
        Some(g) if !g.is_empty() => Some(g.parse().with_context(bad)?),
        _ => None,
    };
    Ok(Ipv4::Static {
        address,
        prefix,
        gateway,
    })
}

/// `off`, `auto` or `ADDRESS/PREFIXLENGTH[/GATEWAY]`.
fn parse_ipv6(v: Option<&str>) -> Result<Ipv6> {
    let v = match v {
        None | Some("auto") => return Ok(Ipv6::Auto),
        Some("off") => return Ok(Ipv6::Off),
        Some(v) => v,
    };
    let parts: Vec<&str> = v.split('/').map(str::trim).collect();
    let bad = || format!("IPv6={v} is not off, auto or address/prefixlength[/gateway]");
    if !(2..=3).contains(&parts.len()) {
        bail!("{}", bad());
    }
    let address: Ipv6Addr = parts[0].parse().with_context(bad)?;
    let prefix = match parts[1].parse::<u8>() {
        Ok(p) if p <= 128 => p,
        _ => bail!("{}", bad()),
    };
    let gateway = match parts.get(2) {
        Some(g) if !g.is_empty() => Some(g.parse().with_context(bad)?),
        _ => None,
    };
    Ok(Ipv6::Static {
        address,
        prefix,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dashboard_config() {
        let text = "[service_home_ethernet]\nType = ethernet\nNameservers = 8.8.8.8,8.8.4.4\n\n\
                    [service_home_wifi]\nHidden = true\nType = wifi\nName = My Net\n\
                    Passphrase = secret pass \nNameservers = 8.8.8.8,8.8.4.4\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].medium, &s[0].ipv4), (Medium::Ethernet, &Ipv4::Dhcp));
        assert_eq!(s[1].ssid, b"My Net");
        assert!(s[1].hidden);
        assert_eq!(s[1].security, Security::Psk("secret pass ".into()));
        assert_eq!(s[1].nameservers.len(), 2);
    }

    #[test]
    fn addresses() {
        let st = |a: &str, p, g: Option<&str>| Ipv4::Static {
            address: a.parse().unwrap(),
            prefix: p,
            gateway: g.map(|g| g.parse().unwrap()),
        };
        assert_eq!(
            parse_ipv4(Some("192.168.1.5/255.255.255.0/192.168.1.1")).unwrap(),
            st("192.168.1.5", 24, Some("192.168.1.1"))
        );
        assert_eq!(
            parse_ipv4(Some("10.0.0.2/8")).unwrap(),
            st("10.0.0.2", 8, None)
        );
        assert_eq!(parse_ipv4(Some("off")).unwrap(), Ipv4::Off);
        for bad in [
            "1.2.3.4",
            "1.2.3.4/255.0.255.0",
            "1.2.3.4/33",
            "x/24",
            "1.2.3.4/24/gw",
        ] {
            assert!(parse_ipv4(Some(bad)).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_ipv6(Some("fd00::5/64/fd00::1")).unwrap(),
            Ipv6::Static { prefix: 64, .. }
        ));
        assert!(parse_ipv6(Some("fd00::5/129")).is_err());
    }

    #[test]
    fn security_rules() {
        let wifi = |extra: &str| parse(&format!("[service_w]\nType=wifi\nName=n\n{extra}"));
        assert_eq!(wifi("").unwrap()[0].security, Security::Open);
        assert_eq!(wifi("Passphrase=").unwrap()[0].security, Security::Open);
        assert_eq!(
            wifi("Security=none\nPassphrase=whatever1").unwrap()[0].security,
            Security::Open
        );
        assert_eq!(
            wifi("Security=wep\nPassphrase=abcde").unwrap()[0].security,
            Security::Wep("abcde".into())
        );
        assert!(wifi("Passphrase=short").is_err());
        assert!(wifi("Security=psk").is_err());
        assert!(wifi("Security=ieee8021x\nEAP=peap").is_err());
        assert!(wifi("Hidden=maybe").is_err());
        assert_eq!(
            wifi("SSID=4361666520c3a9").unwrap()[0].ssid,
            "Cafe é".as_bytes()
        );
        assert!(parse("[service_x]\nType=vpn\n").is_err());
        assert!(parse("[service_x]\nName=n\n").is_err());
        assert_eq!(wifi("Domain=x").unwrap()[0].ignored_keys, ["Domain"]);
    }
}
