//! Helpers shared by the ext4 tests: running hup and e2fsprogs, reading an image back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::runner::Hup;

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `hup mkfs --from TAR --size SIZE IMG`; returns the output (success or not).
pub fn mkfs(tar: &Path, size: &str, img: &Path, extra: &[&str]) -> Output {
    Hup::new()
        .arg("mkfs")
        .arg("--from")
        .arg(tar)
        .args(["--size", size])
        .args(extra)
        .arg(img)
        .run()
}

/// Asserts that `e2fsck -fn` finds nothing to report: exit 0 and only its pass headers and
/// summary line on stdout.
pub fn assert_fsck_clean(img: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("running e2fsck");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "e2fsck -fn {} exited {}:\n{stdout}\n{stderr}",
        img.display(),
        out.status
    );
    for line in stdout.lines() {
        let ok = line.starts_with("Pass ") || line.contains(" files (") && line.contains(" blocks");
        assert!(ok, "e2fsck -fn {} said: {line:?}\n{stdout}", img.display());
    }
    for line in stderr.lines() {
        assert!(
            line.starts_with("e2fsck "),
            "e2fsck -fn {} said on stderr: {line:?}",
            img.display()
        );
    }
}

/// `e2fsck -fn` exit status.
pub fn fsck_status(img: &Path) -> i32 {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("running e2fsck");
    out.status.code().unwrap_or(-1)
}

/// Runs debugfs commands on an image; returns (command, output lines) per command.
pub fn debugfs(img: &Path, cmds: &[String]) -> Vec<(String, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cmds");
    std::fs::write(&file, cmds.join("\n") + "\n").unwrap();
    let out = run(Command::new("debugfs").arg("-f").arg(&file).arg(img));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("debugfs: ") {
            blocks.push((cmd.to_string(), Vec::new()));
        } else if let Some(b) = blocks.last_mut() {
            b.1.push(line.to_string());
        }
    }
    assert_eq!(blocks.len(), cmds.len(), "debugfs output:\n{text}");
    blocks
}

/// `debugfs -R 'stat "PATH"'` output.
pub fn stat(img: &Path, path: &str) -> String {
    String::from_utf8_lossy(
        &run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat \"{path}\""))
            .arg(img))
        .stdout,
    )
    .into_owned()
}

/// One inode as seen through a path, everything compared between images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files and symlinks (directories: empty).
    pub size: String,
    pub links: u32,
    /// Smallest path sharing this inode (hard links).
    pub first_path: String,
    pub xattrs: Vec<String>,
    pub device: Option<String>,
    pub fast_link: Option<String>,
    /// sha256 of the content of regular files and slow symlinks.
    pub sha256: Option<String>,
    /// seconds of mtime (hex as debugfs prints it)
    pub mtime: String,
    #[doc(hidden)]
    pub ino: u32,
    /// `stat` Flags field.
    pub flags: String,
    pub blockcount: u64,
}

/// Reads every path of an image with debugfs.
pub fn readback(img: &Path) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut level: Vec<(u32, String)> = vec![(2, String::new())];
    while !level.is_empty() {
        let cmds: Vec<String> = level
            .iter()
            .map(|(ino, _)| format!("ls -p <{ino}>"))
            .collect();
        let mut next = Vec::new();
        for ((_, dpath), (_, lines)) in level.iter().zip(debugfs(img, &cmds)) {
            for l in lines.iter().filter(|l| l.starts_with('/')) {
                // /ino/mode/uid/gid/name/size/
                let f: Vec<&str> = l[1..l.len() - 1].splitn(5, '/').collect();
                let (name, size) = f[4].rsplit_once('/').unwrap();
                let ino: u32 = f[0].parse().unwrap();
                let node = Node {
                    ino,
                    mode: u32::from_str_radix(f[1], 8).unwrap(),
                    uid: f[2].parse().unwrap(),
                    gid: f[3].parse().unwrap(),
                    size: size.to_string(),
                    ..Default::default()
                };
                let path = match name {
                    "." if dpath.is_empty() => "/".to_string(),
                    "." | ".." => continue,
                    _ => format!("{dpath}/{name}"),
                };
                if node.mode & 0o170000 == 0o040000 && path != "/" {
                    next.push((ino, path.clone()));
                }
                nodes.insert(path, node);
            }
        }
        level = next;
    }
    let dump = tempfile::tempdir().unwrap();
    let mut inos: Vec<u32> = nodes.values().map(|n| n.ino).collect();
    inos.sort_unstable();
    inos.dedup();
    let mut cmds = Vec::new();
    for &ino in &inos {
        cmds.push(format!("stat <{ino}>"));
    }
    let mut dumped = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for n in nodes.values() {
        let t = n.mode & 0o170000;
        let slow_link = t == 0o120000 && n.size.parse::<u64>().unwrap_or(0) >= 60;
        if (t == 0o100000 || slow_link) && seen.insert(n.ino) {
            dumped.push(n.ino);
            cmds.push(format!(
                "dump <{}> {}/{}",
                n.ino,
                dump.path().display(),
                n.ino
            ));
        }
    }
    let mut by_ino: BTreeMap<u32, Node> = BTreeMap::new();
    for (cmd, lines) in debugfs(img, &cmds) {
        let Some(ino) = cmd.strip_prefix("stat <").and_then(|s| s.strip_suffix('>')) else {
            continue;
        };
        let mut n = Node::default();
        let mut in_ea = false;
        for l in &lines {
            if in_ea && l.starts_with("  ") {
                n.xattrs.push(l.trim().to_string());
                continue;
            }
            in_ea = false;
            if let Some(rest) = l.strip_prefix("Links: ") {
                n.links = rest.split_whitespace().next().unwrap().parse().unwrap();
                n.blockcount = rest.split_whitespace().nth(2).unwrap().parse().unwrap();
            } else if l.starts_with("Extended attributes:") {
                in_ea = true;
            } else if l.starts_with("Device major/minor number:") {
                n.device = Some(l.clone());
            } else if l.starts_with("Fast link dest:") {
                n.fast_link = Some(l.clone());
            } else if let Some(m) = l.strip_prefix(" mtime: ") {
                n.mtime = m.split(':').next().unwrap().to_string();
            } else if l.starts_with("Inode:") {
                n.flags = l.split("Flags: ").nth(1).unwrap_or("").to_string();
            }
        }
        n.xattrs.sort();
        by_ino.insert(ino.parse().unwrap(), n);
    }
    // sha256sum (optimized) rather than the sha2 crate (unoptimized in test builds)
    let mut sums: BTreeMap<u32, String> = BTreeMap::new();
    if !dumped.is_empty() {
        let out = run(Command::new("sha256sum")
            .current_dir(dump.path())
            .args(dumped.iter().map(|i| i.to_string())));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let (sum, name) = line.split_once("  ").unwrap();
            sums.insert(name.parse().unwrap(), sum.to_string());
        }
    }
    let mut first: BTreeMap<u32, String> = BTreeMap::new();
    for (path, n) in nodes.iter_mut() {
        let s = &by_ino[&n.ino];
        n.links = s.links;
        n.blockcount = s.blockcount;
        n.xattrs = s.xattrs.clone();
        n.device = s.device.clone();
        n.fast_link = s.fast_link.clone();
        n.mtime = s.mtime.clone();
        n.flags = s.flags.clone();
        n.first_path = first.entry(n.ino).or_insert_with(|| path.clone()).clone();
        n.sha256 = sums.get(&n.ino).cloned();
    }
    nodes
}

/// Compares two readbacks, ignoring inode numbers (and what `skip` says), with a readable
/// report of the first differences.
pub fn assert_same_tree(
    a: &BTreeMap<String, Node>,
    b: &BTreeMap<String, Node>,
    skip: impl Fn(&str, &mut Node, &mut Node),
) {
    let mut diffs = Vec::new();
    for path in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) => {
                let (mut x, mut y) = (x.clone(), y.clone());
                x.ino = 0;
                y.ino = 0;
                x.flags.clear();
                y.flags.clear();
                x.blockcount = 0;
                y.blockcount = 0;
                skip(path, &mut x, &mut y);
                if x != y {
                    diffs.push(format!("{path}:\n  {x:?}\n  {y:?}"));
                }
            }
            (x, _) => diffs.push(format!(
                "{path}: only in {}",
                if x.is_some() { "first" } else { "second" }
            )),
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences, first ones:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(10)].join("\n")
    );
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hup-ext4-")
        .tempdir()
        .unwrap()
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
