//! The test scripts the guest OS runs (busybox sh; `DATA` is the data mount), built from
//! parts in the order they run: `Script::new().stage(&url).reboot()`.
//!
//! The guest prints markers the assertions read (scripts/mk-test-os): `HUP-OS-UP`,
//! `HUP-MARK-GOOD rc=`, `HUP-STATUS <json>`; the parts below add `HUP-DATA-SUM`,
//! `HUP-STAGE rc=` and `HUP-LOG|`.

/// Files the user keeps on the data partition, written by v1 and checked after each
/// update: their checksums are printed as `HUP-DATA-SUM`.
const WRITE_USER_DATA: &str = r#"
mkdir -p "$DATA/userdata/deep/er"
dd if=/dev/urandom of="$DATA/userdata/blob" bs=64k count=32 2>/dev/null
echo "written by $HUP_OS_VERSION in slot $HUP_SLOT" > "$DATA/userdata/note.txt"
dd if=/dev/urandom of="$DATA/userdata/deep/er/small" bs=1k count=3 2>/dev/null
ln -sf ../note.txt "$DATA/userdata/deep/link"
sync
"#;

/// Prints `HUP-DATA-SUM <sha256>  <file>` for the user's files.
const PRINT_USER_DATA: &str = r#"
(cd "$DATA/userdata" && sha256sum blob note.txt deep/er/small deep/link) | sed 's/^/HUP-DATA-SUM /'
"#;

/// Prints every apply log as `HUP-LOG|<path>|<line>`.
const PRINT_APPLY_LOGS: &str = r#"
for f in "$DATA"/hup/log/apply-*.log; do
    [ -f "$f" ] && sed "s#^#HUP-LOG|$f|#" "$f"
done
"#;

/// The human-readable `hup status`, then the JSON one.
const STATUS: &str = "hup status 2>&1\n/etc/hup-test/status\n";

const REBOOT: &str = "sync\nreboot\n";
const POWEROFF: &str = "sync\npoweroff\n";

/// A guest test script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script(String);

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Writes the user's files on the data partition (checked by [`Script::print_user_data`]).
    pub fn write_user_data(self) -> Script {
        self.sh(WRITE_USER_DATA)
    }

    /// `HUP-DATA-SUM <sha256>  <file>` for each of the user's files.
    pub fn print_user_data(self) -> Script {
        self.sh(PRINT_USER_DATA)
    }

    /// Every apply log as `HUP-LOG|<path>|<line>` (read by `Boot::printed_logs`).
    pub fn print_apply_logs(self) -> Script {
        self.sh(PRINT_APPLY_LOGS)
    }

    /// `hup stage URL`, then `HUP-STAGE rc=N` and the status.
    pub fn stage(self, url: &str) -> Script {
        self.sh(&format!(
            "hup stage '{url}' 2>&1\necho \"HUP-STAGE rc=$?\"\n/etc/hup-test/status\nsync\n"
        ))
    }

    /// The human-readable `hup status`, then the JSON one (`HUP-STATUS`).
    pub fn status(self) -> Script {
        self.sh(STATUS)
    }

    pub fn reboot(self) -> Script {
        self.sh(REBOOT)
    }

    pub fn poweroff(self) -> Script {
        self.sh(POWEROFF)
    }

    /// Shell text of the test's own.
    pub fn sh(mut self, text: &str) -> Script {
        self.0.push_str(text);
        self
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_run_in_the_order_given() {
        let s = Script::new()
            .status()
            .stage("http://h/b.hup")
            .sh("echo x\n")
            .poweroff();
        assert_eq!(
            s.text(),
            "hup status 2>&1\n/etc/hup-test/status\n\
             hup stage 'http://h/b.hup' 2>&1\necho \"HUP-STAGE rc=$?\"\n/etc/hup-test/status\nsync\n\
             echo x\nsync\npoweroff\n"
        );
    }
}
