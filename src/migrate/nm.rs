//! NetworkManager keyfile connections (`nm-settings-keyfile(5)`), written in the layout of
//! the seed's migration: `[connection]`, the medium's group, `[wifi-security]` when the
//! network is not open, `[ipv4]`, `[ipv6]`; keys sorted within each group.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::connman::{Ipv4, Ipv6, Medium, Security, Service};
use super::keyfile::{escape, ssid_value};

/// A connection to write under `id` (also its file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub service: Service,
}

impl Connection {
    /// The keyfile text.
    pub fn keyfile(&self) -> String {
        let s = &self.service;
        let mut groups: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
        let mut conn = vec![("id", escape(&self.id))];
        match s.medium {
            Medium::Wifi => conn.push(("type", "wifi".into())),
            Medium::Ethernet => {
                conn.push(("type", "ethernet".into()));
                if s.mac.is_none() {
                    conn.push(("interface-name", "eth0".into()));
                }
            }
        }
        groups.push(("connection", conn));
        let mac = s.mac.iter().map(|m| ("mac-address", m.clone()));
        match s.medium {
            Medium::Wifi => {
                let mut wifi: Vec<(&str, String)> = mac.collect();
                if s.hidden {
                    wifi.push(("hidden", "true".into()));
                }
                wifi.push(("mode", "infrastructure".into()));
                wifi.push(("ssid", ssid_value(&s.ssid)));
                groups.push(("wifi", wifi));
                match &s.security {
                    Security::Open => {}
                    Security::Psk(p) => groups.push((
                        "wifi-security",
                        vec![
                            ("auth-alg", "open".into()),
                            ("key-mgmt", "wpa-psk".into()),
                            ("psk", escape(p)),
                        ],
                    )),
                    Security::Wep(k) => groups.push((
                        "wifi-security",
                        vec![
                            ("auth-alg", "open".into()),
                            ("key-mgmt", "none".into()),
                            ("wep-key-type", "1".into()),
                            ("wep-key0", escape(k)),
                        ],
                    )),
                }
            }
            Medium::Ethernet => groups.push(("ethernet", mac.collect())),
        }
        let dns = |v6: bool| -> Option<String> {
            let l: String = s
                .nameservers
                .iter()
                .filter(|a| matches!(a, IpAddr::V6(_)) == v6)
                .map(|a| format!("{a};"))
                .collect();
            (!l.is_empty()).then_some(l)
        };
        let search: Option<String> = (!s.search_domains.is_empty()).then(|| {
            s.search_domains
                .iter()
                .map(|d| format!("{};", escape(d).replace(';', "\\;")))
                .collect()
        });

        let mut v4 = Vec::new();
        let method4 = match &s.ipv4 {
            Ipv4::Dhcp => "auto",
            Ipv4::Off => "disabled",
            Ipv4::Static {
                address,
                prefix,
                gateway,
            } => {
                let gw = gateway.map(|g| format!(",{g}")).unwrap_or_default();
                v4.push(("address1", format!("{address}/{prefix}{gw}")));
                "manual"
            }
        };
        if let Some(d) = dns(false) {
            v4.push(("dns", d));
        }
        if let Some(d) = &search {
            v4.push(("dns-search", d.clone()));
        }
        v4.push(("method", method4.into()));
        groups.push(("ipv4", v4));

        let mut v6 = vec![("addr-gen-mode", "stable-privacy".to_string())];
        let method6 = match &s.ipv6 {
            Ipv6::Auto => "auto",
            Ipv6::Off => "disabled",
            Ipv6::Static {
                address,
                prefix,
                gateway,
            } => {
                let gw = gateway.map(|g| format!(",{g}")).unwrap_or_default();
                v6.push(("address1", format!("{address}/{prefix}{gw}")));
                "manual"
            }
        };
        if let Some(d) = dns(true) {
            v6.push(("dns", d));
        }
        v6.push(("method", method6.into()));
        groups.push(("ipv6", v6));

        let mut out = String::new();
        for (i, (name, mut keys)) in groups.into_iter().enumerate() {
            if name != "connection" {
                keys.sort_by(|a, b| a.0.cmp(b.0));
            }
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "[{name}]");
            for (k, v) in keys {
                let _ = writeln!(out, "{k}={v}");
            }
        }
        out
    }
}
