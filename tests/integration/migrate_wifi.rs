//! `wifi-config-json-to-networkmanager`: config.json and WiFi Connect samples to exact
//! NetworkManager keyfiles, each read back by an independent key-file reader.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hup::migrate::{self, CONNECTIONS_DIR, MigrationContext};
use serde_json::{Value, json};

const ID: &str = "wifi-config-json-to-networkmanager";

/// A minimal GLib key-file reader written for this test: groups of unescaped values.
fn read_keyfile(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut group = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "bad group line {line:?}");
            group = line[1..line.len() - 1].to_string();
            assert!(
                out.insert(group.clone(), BTreeMap::new()).is_none(),
                "group twice"
            );
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        let mut val = String::new();
        let mut it = v.trim_start().chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                val.push(match it.next().expect("escape at end") {
                    's' => ' ',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' => '\\',
                    other => panic!("invalid escape \\{other}"),
                });
            } else {
                val.push(c);
            }
        }
        let g = out.get_mut(&group).expect("key before group");
        assert!(g.insert(k.to_string(), val).is_none(), "key twice");
    }
    out
}

/// NetworkManager's reading of an SSID value: a list of byte values, or a string whose
/// `\;` stands for `;`.
fn decode_ssid(v: &str) -> Vec<u8> {
    let int_list = !v.is_empty()
        && v.ends_with(';')
        && v.trim_end_matches(';')
            .split(';')
            .all(|n| n.parse::<u8>().is_ok());
    if int_list {
        return v
            .trim_end_matches(';')
            .split(';')
            .map(|n| n.parse().unwrap())
            .collect();
    }
    v.replace("\\;", ";").into_bytes()
}

struct Expect {
    file: &'static str,
    text: &'static str,
    ssid: Option<&'static [u8]>,
    /// (group, key, value) read back by the test's reader
    fields: &'static [(&'static str, &'static str, &'static str)],
}

struct Case {
    name: &'static str,
    boot_config: Option<Value>,
    data_config: Option<Value>,
    /// (app directory, network.config text) under DATA/resin-data/
    wifi_connect: &'static [(&'static str, &'static str)],
    expect: &'static [Expect],
}

const WPA: &str = "[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\n\
ssid=Home Net\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=correct horse\n\n\
[ipv4]\ndns=8.8.8.8;8.8.4.4;\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n";

const OPEN: &str = "[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\n\
ssid=Cafe Free\n\n[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n";

const SPECIAL: &str = "[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nmode=infrastructure\n\
ssid=\\sa\\\\;b\\\\c \"q\"\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=pass\\\\word\\s\n\n\
[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n";

const STATIC: &str = "[connection]\nid=resin-static-ethernet\ntype=ethernet\ninterface-name=eth0\n\n\
[ethernet]\n\n[ipv4]\naddress1=192.168.1.50/24,192.168.1.1\ndns=1.1.1.1;8.8.8.8;\nmethod=manual\n\n\
[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n";

const UNICODE: &str = "[connection]\nid=resin-wifi-connect\ntype=wifi\n\n[wifi]\nmode=infrastructure\n\
ssid=67;97;102;195;169;32;240;159;147;182;\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\n\
psk=m0t de passe\n\n[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto\n";

const RAW_SSID: &str = "[connection]\nid=resin-wifi-connect-2\ntype=wifi\n\n[wifi]\n\
mac-address=00:11:22:AA:BB:CC\nmode=infrastructure\nssid=255;0;254;\n\n[ipv4]\n\
address1=10.1.2.3/16\nmethod=manual\n\n[ipv6]\naddr-gen-mode=stable-privacy\n\
address1=fd00::3/64,fd00::1\ndns=fd00::53;\nmethod=manual\n";

const DASHBOARD_NC: &str = "[service_home_ethernet]\nType = ethernet\nNameservers = 8.8.8.8,8.8.4.4\n\n\
[service_home_wifi]\nHidden = true\nType = wifi\nName = Home Net\nPassphrase = correct horse\n\
Nameservers = 8.8.8.8,8.8.4.4\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "wpa from network.config in config.json (boot)",
            boot_config: Some(json!({
                "applicationId": 1,
                "files": { "network/settings": "[global]\nOfflineMode=false\n",
                           "network/network.config": DASHBOARD_NC },
                "wifiSsid": "ignored", "wifiKey": "ignored!"
            })),
            data_config: None,
            wifi_connect: &[],
            expect: &[Expect {
                file: "resin-wifi",
                text: WPA,
                ssid: Some(b"Home Net"),
                fields: &[
                    ("wifi-security", "key-mgmt", "wpa-psk"),
                    ("wifi-security", "psk", "correct horse"),
                    ("wifi", "hidden", "true"),
                    ("ipv4", "method", "auto"),
                ],
            }],
        },
        Case {
            name: "open network from wifiSsid (data partition config.json)",
            boot_config: None,
            data_config: Some(json!({ "wifiSsid": "Cafe Free", "wifiKey": "" })),
            wifi_connect: &[],
            expect: &[Expect {
                file: "resin-wifi",
                text: OPEN,
                ssid: Some(b"Cafe Free"),
                fields: &[("connection", "type", "wifi"), ("ipv4", "method", "auto")],
            }],
        },
        Case {
            name: "special characters, quotes and a trailing space survive",
            boot_config: Some(json!({ "files": { "network/network.config":
                "# provisioned\n[global]\nName=x\n[service_home_wifi]\nType=wifi\n\
                 Name=\\sa;b\\\\c \"q\"   \nPassphrase=pass\\\\word \n" } })),
            data_config: None,
            wifi_connect: &[],
            expect: &[Expect {
                file: "resin-wifi",
                text: SPECIAL,
                ssid: Some(b" a;b\\c \"q\""),
                fields: &[("wifi-security", "psk", "pass\\word ")],
            }],
        },
        Case {
            name: "static ethernet",
            boot_config: Some(json!({ "files": { "network/network.config":
                "[service_home_ethernet]\nType = ethernet\n\
                 IPv4 = 192.168.1.50/255.255.255.0/192.168.1.1\nNameservers = 1.1.1.1,8.8.8.8\n" } })),
            data_config: None,
            wifi_connect: &[],
            expect: &[Expect {
                file: "resin-static-ethernet",
                text: STATIC,
                ssid: None,
                fields: &[
                    ("connection", "interface-name", "eth0"),
                    ("ipv4", "address1", "192.168.1.50/24,192.168.1.1"),
                    ("ipv4", "dns", "1.1.1.1;8.8.8.8;"),
                    ("ipv4", "method", "manual"),
                ],
            }],
        },
        Case {
            name: "WiFi Connect: non-ASCII SSID, raw SSID bytes, hidden=false, static IPv6",
            boot_config: None,
            data_config: None,
            wifi_connect: &[
                (
                    "1234",
                    "[service_home_wifi]\nType = wifi\nName = Café 📶\nPassphrase = m0t de passe\n",
                ),
                (
                    "5678",
                    "[service_other]\nType=wifi\nSSID=ff00fe\nHidden=false\nMAC=00:11:22:aa:bb:cc\n\
                          IPv4=10.1.2.3/16\nIPv6=fd00::3/64/fd00::1\nNameservers=fd00::53\n",
                ),
            ],
            expect: &[
                Expect {
                    file: "resin-wifi-connect",
                    text: UNICODE,
                    ssid: Some(b"Caf\xc3\xa9 \xf0\x9f\x93\xb6"),
                    fields: &[("wifi-security", "psk", "m0t de passe")],
                },
                Expect {
                    file: "resin-wifi-connect-2",
                    text: RAW_SSID,
                    ssid: Some(&[0xff, 0x00, 0xfe]),
                    fields: &[
                        ("ipv6", "method", "manual"),
                        ("wifi", "mac-address", "00:11:22:AA:BB:CC"),
                    ],
                },
            ],
        },
        Case {
            name: "missing files: nothing to migrate",
            boot_config: None,
            data_config: None,
            wifi_connect: &[],
            expect: &[],
        },
        Case {
            name: "config.json without network settings",
            boot_config: Some(json!({ "applicationId": 1, "files": {} })),
            data_config: Some(json!({ "wifiSsid": "unused because boot's config.json wins" })),
            wifi_connect: &[],
            expect: &[],
        },
    ]
}

fn lay_out(root: &Path, case: &Case) -> MigrationContext {
    let data = root.join("data");
    let boot = root.join("boot");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&boot).unwrap();
    if let Some(c) = &case.boot_config {
        fs::write(
            boot.join("config.json"),
            serde_json::to_vec_pretty(c).unwrap(),
        )
        .unwrap();
    }
    if let Some(c) = &case.data_config {
        fs::write(data.join("config.json"), serde_json::to_vec(c).unwrap()).unwrap();
    }
    for (app, text) in case.wifi_connect {
        let d = data.join("resin-data").join(app);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("network.config"), text).unwrap();
    }
    MigrationContext::new(&data, &boot)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn samples_become_exact_keyfiles() {
    let m = migrate::get(ID).expect("registered");
    for case in cases() {
        let t = tempfile::tempdir().unwrap();
        let ctx = lay_out(t.path(), &case);
        assert_eq!(
            ctx.connections_dir,
            t.path().join("data").join(CONNECTIONS_DIR)
        );
        let check = m.check(&ctx).unwrap();
        assert!(check.is_ok(), "{}: {:?}", case.name, check.problems);
        assert_eq!(check.outputs.len(), case.expect.len(), "{}", case.name);
        assert_eq!(
            check.nothing_to_do(),
            case.expect.is_empty(),
            "{}",
            case.name
        );

        let notes = check.notes.join("\n");
        if case.name.starts_with("wpa") {
            assert!(notes.contains("wifiSsid \"ignored\" is ignored"), "{notes}");
            assert!(
                notes.contains("[service_home_ethernet]: ethernet with DHCP"),
                "{notes}"
            );
            assert!(notes.contains("Nameservers are not migrated"), "{notes}");
        }
        if case.name == "config.json without network settings" {
            assert!(notes.contains("data/config.json is ignored"), "{notes}");
        }

        let report = m.run(&ctx).unwrap();
        let mut want: Vec<String> = case.expect.iter().map(|e| e.file.to_string()).collect();
        want.sort();
        assert_eq!(listing(&ctx.connections_dir), want, "{}", case.name);
        assert_eq!(report.written, check.outputs, "{}", case.name);
        for e in case.expect {
            let path = ctx.connections_dir.join(e.file);
            let text = fs::read_to_string(&path).unwrap();
            assert_eq!(text, e.text, "{}: {}", case.name, e.file);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o600, "{}", case.name);
            let kf = read_keyfile(&text);
            assert_eq!(kf["connection"]["id"], e.file, "{}", case.name);
            if let Some(ssid) = e.ssid {
                assert_eq!(decode_ssid(&kf["wifi"]["ssid"]), ssid, "{}", case.name);
                assert_eq!(kf["wifi"]["mode"], "infrastructure");
                // No passphrase, no [wifi-security]: an open network.
                assert_eq!(
                    kf.contains_key("wifi-security"),
                    text.contains("psk="),
                    "{}",
                    case.name
                );
            }
            for (g, k, v) in e.fields {
                assert_eq!(kf[*g][*k], *v, "{}: [{g}] {k}", case.name);
            }
        }
        // Running again (after a power cut) writes the same files and leaves no temporaries.
        m.run(&ctx).unwrap();
        assert_eq!(listing(&ctx.connections_dir), want, "{}", case.name);
    }
}

type BadCase = (
    &'static str,
    Option<Value>,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn unparseable_configs_are_reported_and_nothing_is_written() {
    let good_wifi_connect: &'static [(&str, &str)] = &[(
        "1",
        "[service_home_wifi]\nType=wifi\nName=Fine\nPassphrase=goodpassword\n",
    )];
    // (name, boot config.json, WiFi Connect files, what the problem must say)
    let bad: Vec<BadCase> = vec![
        ("invalid JSON", None, good_wifi_connect, "not valid JSON"),
        (
            "network.config with a bad line",
            Some(
                json!({ "files": { "network/network.config": "[service_home_wifi]\nType=wifi\nName\n" } }),
            ),
            good_wifi_connect,
            "line 3",
        ),
        (
            "wifiSsid is not a string",
            Some(json!({ "wifiSsid": 42 })),
            &[],
            "\"wifiSsid\" is not a string",
        ),
        (
            "802.1X",
            Some(json!({ "files": { "network/network.config":
                "[service_home_wifi]\nType=wifi\nName=Corp\nSecurity=ieee8021x\nEAP=peap\n" } })),
            &[],
            "Security=ieee8021x is not migrated",
        ),
        (
            "too short a WPA passphrase",
            Some(json!({ "wifiSsid": "Home", "wifiKey": "short" })),
            &[],
            "wifiKey",
        ),
        (
            "bad static address in WiFi Connect's file",
            None,
            &[(
                "9",
                "[service_home_ethernet]\nType=ethernet\nIPv4=192.168.1.300/24\n",
            )],
            "IPv4=192.168.1.300/24",
        ),
        (
            "bad escape in WiFi Connect's file",
            None,
            &[("9", "[service_home_wifi]\nType=wifi\nName=a\\qb\n")],
            "invalid escape",
        ),
    ];
    let m = migrate::get(ID).unwrap();
    for (name, config, wifi_connect, needle) in bad {
        let t = tempfile::tempdir().unwrap();
        let case = Case {
            name,
            boot_config: config,
            data_config: None,
            wifi_connect,
            expect: &[],
        };
        let ctx = lay_out(t.path(), &case);
        if name == "invalid JSON" {
            fs::write(ctx.boot_root.join("config.json"), "{\"wifiSsid\": \"x\",").unwrap();
        }
        let check = m.check(&ctx).unwrap();
        assert_eq!(check.problems.len(), 1, "{name}: {:?}", check.problems);
        assert!(
            check.problems[0].contains(needle),
            "{name}: {:?}",
            check.problems
        );
        let source =
            if wifi_connect.is_empty() || case.boot_config.is_some() || name == "invalid JSON" {
                "config.json"
            } else {
                "network.config"
            };
        assert!(
            check.problems[0].contains(source),
            "{name}: {:?}",
            check.problems
        );
        let err = format!("{:#}", m.run(&ctx).unwrap_err());
        assert!(
            err.contains("nothing was written") && err.contains(needle),
            "{name}: {err}"
        );
        assert!(listing(&ctx.connections_dir).is_empty(), "{name}");
        // The registry-level check refuses the same way, before anything is written.
        let all = migrate::check_all(&[ID.to_string()], &ctx).unwrap_err();
        assert!(format!("{all:#}").contains(needle), "{name}");
        // The input is left as it was.
        if let Some(c) = &case.boot_config {
            assert_eq!(
                fs::read(ctx.boot_root.join("config.json")).unwrap(),
                serde_json::to_vec_pretty(c).unwrap()
            );
        }
    }
}

#[test]
fn a_failed_write_leaves_no_output() {
    let t = tempfile::tempdir().unwrap();
    let case = Case {
        name: "write failure",
        boot_config: Some(json!({ "files": { "network/network.config": DASHBOARD_NC } })),
        data_config: None,
        wifi_connect: &[("1", "[service_home_wifi]\nType=wifi\nName=Second\n")],
        expect: &[],
    };
    let ctx = lay_out(t.path(), &case);
    // The second output's temporary name is taken by a directory: its creation fails
    // after the first one was written.
    fs::create_dir_all(ctx.connections_dir.join(".resin-wifi-connect.hup-tmp/x")).unwrap();
    let m = migrate::get(ID).unwrap();
    assert!(m.run(&ctx).is_err());
    assert_eq!(
        listing(&ctx.connections_dir),
        [".resin-wifi-connect.hup-tmp"]
    );
}

#[test]
fn registry() {
    assert!(migrate::is_known(ID));
    assert!(!migrate::is_known("no-such-migration"));
    assert_eq!(migrate::get(ID).unwrap().id(), ID);
    assert!(migrate::registry().iter().any(|m| m.id() == ID));
    let t = tempfile::tempdir().unwrap();
    let ctx = MigrationContext::new(&t.path().join("data"), &t.path().join("no-boot"));
    assert!(migrate::check_all(&["nope".into()], &ctx).is_err());
    let reports = migrate::run_all(&[ID.to_string()], &ctx).unwrap();
    assert!(reports[0].written.is_empty());
    assert!(!ctx.connections_dir.exists());
}
