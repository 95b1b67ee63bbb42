//! The key-file parser shared by connman and NetworkManager, connman provisioning files
//! into services, and the NetworkManager keyfiles hup writes from them (which must parse
//! again, with the same values). Escaping must round-trip.
#![no_main]

use hup::migrate::connman;
use hup::migrate::keyfile::{KeyFile, escape, unescape};
use hup::migrate::nm::Connection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(kf) = KeyFile::parse(&text) {
        for g in &kf.groups {
            for (_, raw) in &g.entries {
                if let Ok(v) = unescape(raw) {
                    assert_eq!(unescape(&escape(&v)).unwrap(), v, "escape round trip");
                }
            }
        }
    }
    let Ok(services) = connman::parse(&text) else {
        return;
    };
    for (i, service) in services.into_iter().enumerate() {
        let c = Connection {
            id: format!("fuzz-{i}"),
            service,
        };
        let written = c.keyfile();
        let kf = KeyFile::parse(&written)
            .unwrap_or_else(|e| panic!("a keyfile hup writes does not parse: {e:#}\n{written}"));
        let id = kf
            .group("connection")
            .and_then(|g| g.get("id").ok().flatten());
        assert_eq!(id.as_deref(), Some(c.id.as_str()), "{written}");
    }
});
