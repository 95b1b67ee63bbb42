//! Fingerprints: tar and directory agree, every kind of change is reported (library and
//! `hup fingerprint check`), the fingerprint rides along a tar stream (tap and embed).

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use hup::bundle::tree::{TreeKind, write_tar};
use hup::data::fingerprint::{
    self as fp, DEFAULT_IGNORE, EMBED_PATH, ExtraFile, Fingerprint, Kind, TarTap, compare,
};
use sha2::Digest as _;

const HUP: &str = env!("CARGO_BIN_EXE_hup");

fn hup(args: &[&str]) -> Output {
    Command::new(HUP)
        .args(args)
        .env_remove("HUP_LOG")
        .output()
        .expect("running hup")
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small root tree with one of each kind the host lets an unprivileged test make.
fn make_tree(root: &Path) {
    write(&root.join("etc/app.conf"), b"port=80\n", 0o644);
    write(&root.join("etc/secret"), b"hunter2\n", 0o600);
    write(&root.join("etc/hup/system.json"), b"{}\n", 0o644);
    write(
        &root.join("usr/bin/tool"),
        b"#!/bin/sh\necho tool\n",
        0o4755,
    );
    write(&root.join("usr/lib/empty"), b"", 0o644);
    write(&root.join("var/log/messages"), b"boot\n", 0o640);
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-again")).unwrap();
    symlink("../lib/empty", root.join("usr/bin/link")).unwrap();
    let odd = root.join(std::ffi::OsStr::from_bytes(b"usr/odd-\xff-name"));
    write(&odd, b"bytes", 0o644);
    nix::unistd::mkfifo(
        &root.join("usr/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    fs::create_dir_all(root.join("srv/empty-dir")).unwrap();
    fs::set_permissions(
        root.join("srv/empty-dir"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
}

fn tar_of(root: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(root, TreeKind::Rootfs, &mut out).unwrap();
    out
}

#[test]
fn tar_and_directory_give_the_same_fingerprint() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let from_dir = fp::fingerprint_of_dir(t.path()).unwrap();
    let from_tar = fp::fingerprint_of_tar(Cursor::new(tar_of(t.path()))).unwrap();
    assert_eq!(from_dir, from_tar);

    let tool = from_dir.get("usr/bin/tool").unwrap();
    assert_eq!(
        (tool.kind, tool.mode, tool.size),
        (Kind::File, 0o4755, Some(20))
    );
    assert_eq!(
        from_dir.get("usr/bin/tool-again").unwrap().sha256,
        tool.sha256
    );
    let link = from_dir.get("usr/bin/link").unwrap();
    assert_eq!(
        (link.kind, link.target.as_deref()),
        (Kind::Symlink, Some("../lib/empty"))
    );
    assert_eq!(from_dir.get("usr/fifo").unwrap().kind, Kind::Fifo);
    assert!(from_dir.get("usr/odd-\\xff-name").is_some());
    assert_eq!(from_dir.get("srv/empty-dir").unwrap().mode, 0o1777);
    assert_eq!(
        from_dir.get("usr/lib/empty").unwrap().sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    // The document round-trips and is byte-for-byte stable.
    let json = from_dir.to_json();
    assert_eq!(Fingerprint::from_json(&json).unwrap(), from_dir);
    assert_eq!(fp::fingerprint_of_dir(t.path()).unwrap().to_json(), json);
}

#[test]
fn each_kind_of_change_is_reported() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let expected = fp::fingerprint_of_dir(t.path()).unwrap();
    let same = fp::fingerprint_of_dir(t.path()).unwrap();
    assert!(compare(&expected, &same, DEFAULT_IGNORE).is_empty());

    write(&t.path().join("etc/app.conf"), b"port=81\n", 0o644); // modified, same size
    write(&t.path().join("etc/new"), b"x", 0o644); // added
    fs::remove_file(t.path().join("usr/lib/empty")).unwrap(); // missing
    fs::set_permissions(
        t.path().join("etc/secret"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::remove_file(t.path().join("usr/bin/link")).unwrap();
    symlink("/etc/secret", t.path().join("usr/bin/link")).unwrap(); // retargeted
    write(&t.path().join("var/log/messages"), b"boot\nmore\n", 0o640); // ignored by default

    let actual = fp::fingerprint_of_dir(t.path()).unwrap();
    let d = compare(&expected, &actual, DEFAULT_IGNORE);
    let modified: Vec<&str> = d.modified.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(modified, ["etc/app.conf", "usr/bin/link"]);
    assert!(
        d.modified[0].detail.starts_with("content: 8 bytes"),
        "{d:?}"
    );
    assert_eq!(d.modified[1].detail, "target ../lib/empty -> /etc/secret");
    assert_eq!(d.added, ["etc/new"]);
    assert_eq!(d.missing, ["usr/lib/empty"]);
    assert_eq!(d.changed_metadata.len(), 1);
    assert_eq!(d.changed_metadata[0].path, "etc/secret");
    assert_eq!(d.changed_metadata[0].detail, "mode 0600 -> 0644");

    // Without the ignore list the log file is a modification too; a type change is one.
    let none: &[&str] = &[];
    let all = compare(&expected, &actual, none);
    assert!(all.modified.iter().any(|c| c.path == "var/log/messages"));
    fs::remove_file(t.path().join("etc/new")).unwrap();
    fs::create_dir(t.path().join("etc/new")).unwrap();
    fs::remove_file(t.path().join("etc/app.conf")).unwrap();
    fs::create_dir(t.path().join("etc/app.conf")).unwrap();
    let d = compare(
        &expected,
        &fp::fingerprint_of_dir(t.path()).unwrap(),
        &["etc/new"],
    );
    assert_eq!(d.modified[0].detail, "type file -> dir");
    assert!(d.added.is_empty());
}

#[test]
fn hup_fingerprint_check_exit_codes_and_output() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_tree(&root);
    let record = t.path().join("fingerprint.json");
    let o = hup(&[
        "fingerprint",
        "create",
        "--root",
        root.to_str().unwrap(),
        "-o",
        record.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let check = |extra: &[&str]| {
        let mut args = vec!["fingerprint", "check", "--root", root.to_str().unwrap()];
        args.extend(["--fingerprint", record.to_str().unwrap()]);
        args.extend(extra);
        hup(&args)
    };
    let o = check(&[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("identical"));

    write(&root.join("etc/app.conf"), b"port=8080\n", 0o644);
    write(&root.join("usr/bin/dropped"), b"evil", 0o755);
    fs::remove_file(root.join("usr/bin/tool-again")).unwrap();
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o666)).unwrap();
    write(&root.join("var/log/messages"), b"later\n", 0o640);

    let o = check(&[]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("modified etc/app.conf (content: 8 bytes"),
        "{out}"
    );
    assert_eq!(lines[1], "added usr/bin/dropped");
    assert_eq!(lines[2], "missing usr/bin/tool-again");
    assert_eq!(lines[3], "metadata etc/secret (mode 0600 -> 0666)");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("1 modified, 1 added, 1 missing, 1 with changed permissions or owner"),
        "{err}"
    );

    let o = check(&["--json", "--ignore", "usr/bin/dropped"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["identical"], false);
    assert_eq!(v["added"].as_array().unwrap().len(), 0);
    assert_eq!(v["missing"][0], "usr/bin/tool-again");
    assert_eq!(v["modified"][0]["path"], "etc/app.conf");
    assert_eq!(v["changed_metadata"][0]["detail"], "mode 0600 -> 0666");

    let o = check(&["--no-default-ignore"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("modified var/log/messages"));

    // The other slot is never mounted by hup: it says so.
    let o = Command::new(HUP)
        .args([
            "fingerprint",
            "check",
            "--slot",
            "b",
            "--config",
            "/nonexistent/system.json",
        ])
        .env("HUP_BOOTED_SLOT", "a")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let o = Command::new(HUP)
        .args(["fingerprint", "check", "--slot", "b"])
        .env("HUP_BOOTED_SLOT", "a")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("slot b is not the booted slot (a)"), "{err}");
    assert!(err.contains("--root MOUNTPOINT"), "{err}");
}

/// Reads a tar and counts how many bytes the consumer took.
struct Counting<R> {
    inner: R,
    n: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k, std::sync::atomic::Ordering::SeqCst);
        Ok(k)
    }
}

#[test]
fn embed_adds_the_record_and_tap_sees_the_same_stream() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    // Big enough to cross the tap's chunks; a multiple of 512 and not.
    write(&t.path().join("usr/lib/big"), &vec![7u8; 700_001], 0o644);
    let tar = tar_of(t.path());
    let original = fp::fingerprint_of_tar(Cursor::new(&tar)).unwrap();

    let mut tapped = TarTap::new(Vec::new()).unwrap();
    write_tar(t.path(), TreeKind::Rootfs, &mut tapped).unwrap();
    let (bytes, from_tap) = tapped.finish().unwrap();
    assert_eq!(bytes, tar);
    assert_eq!(from_tap, original);

    // Trailing bytes after the end-of-archive blocks are read (and dropped).
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 10240]);
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let src = Counting {
        inner: Cursor::new(padded.clone()),
        n: read.clone(),
    };
    let (mut reader, done) = fp::embed(src).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), padded.len());
    assert_eq!(done.get().unwrap(), original);

    let mut archive = tar::Archive::new(Cursor::new(&out));
    let mut recorded = None;
    let mut members = 0;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        members += 1;
        if e.path_bytes().as_ref() == EMBED_PATH.as_bytes() {
            let mut s = Vec::new();
            e.read_to_end(&mut s).unwrap();
            assert_eq!(e.header().mode().unwrap(), 0o644);
            recorded = Some(Fingerprint::from_json(&s).unwrap());
        }
    }
    assert_eq!(recorded.unwrap(), original);
    let orig_members = tar::Archive::new(Cursor::new(&tar))
        .entries()
        .unwrap()
        .count();
    assert_eq!(members, orig_members + 1);
    // The output is the input up to its end blocks, then the new member.
    let body = tar.len() - 1024;
    assert_eq!(&out[..body], &tar[..body]);
    let mut with_record = fp::fingerprint_of_tar(Cursor::new(&out)).unwrap();
    assert!(with_record.entries.remove(EMBED_PATH).is_some());
    assert_eq!(with_record, original);

    // An archive that already carries the record keeps it (no duplicate member).
    let (mut again, _) = fp::embed(Cursor::new(out.clone())).unwrap();
    let mut out2 = Vec::new();
    again.read_to_end(&mut out2).unwrap();
    let count = tar::Archive::new(Cursor::new(&out2))
        .entries()
        .unwrap()
        .count();
    assert_eq!(count, members);

    // Directories made for the record are part of it.
    let bare = tempfile::tempdir().unwrap();
    write(&bare.path().join("etc/os-release"), b"ID=x\n", 0o644);
    let bare_tar = tar_of(bare.path());
    let (mut r, done) = fp::embed(Cursor::new(bare_tar.clone())).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    let mut want = fp::fingerprint_of_tar(Cursor::new(&bare_tar)).unwrap();
    want.insert(fp::Entry::new("etc/hup".into(), Kind::Dir, 0o755, 0, 0));
    assert_eq!(done.get().unwrap(), want);
    let mut written = fp::fingerprint_of_tar(Cursor::new(&out)).unwrap();
    written.entries.remove(EMBED_PATH).unwrap();
    assert_eq!(written, want);

    // A truncated stream is an error, not a shorter archive.
    let (mut cut, _) = fp::embed(Cursor::new(tar[..tar.len() / 2 + 100].to_vec())).unwrap();
    assert!(cut.read_to_end(&mut Vec::new()).is_err());
}

#[test]
fn sparse_members_hash_their_apparent_content() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let f = root.join("sparse.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = fs::File::create(&f).unwrap();
        file.set_len(8 << 20).unwrap();
        for i in 0..7u64 {
            file.seek(SeekFrom::Start(i * (1 << 20) + 4096)).unwrap();
            file.write_all(&[i as u8 + 1; 5000]).unwrap();
        }
    }
    let from_dir = fp::fingerprint_of_dir(&root).unwrap();
    let want = from_dir.get("sparse.img").unwrap().clone();
    for format in ["posix", "gnu"] {
        let archive = t.path().join(format!("{format}.tar"));
        let o = Command::new("tar")
            .args(["--sparse", &format!("--format={format}"), "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&archive)
            .arg("sparse.img")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = fs::read(&archive).unwrap();
        assert!(
            bytes.len() < 1 << 20,
            "{format}: tar did not store the file sparse"
        );
        let got = fp::fingerprint_of_tar(Cursor::new(&bytes)).unwrap();
        let e = got.get("sparse.img").unwrap();
        // Sparse members get the digest that counts holes instead of hashing them; the
        // directory (whose filesystem reports the holes) gets the same one.
        assert!(
            want.sparse_sha256.is_some() && want.sha256.is_none(),
            "{want:?}"
        );
        assert_eq!(
            (e.size, &e.sparse_sha256, &e.sha256),
            (want.size, &want.sparse_sha256, &None),
            "{format}"
        );
        // The embedding reader frames sparse members (GNU extension headers) correctly.
        let (mut r, done) = fp::embed(Cursor::new(bytes)).unwrap();
        r.read_to_end(&mut Vec::new()).unwrap();
        assert_eq!(
            done.get().unwrap().get("sparse.img").unwrap().sparse_sha256,
            want.sparse_sha256
        );
    }
}

#[test]
fn the_ext4_writer_takes_the_embedded_stream() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_tree(&root);
    let tar = tar_of(&root);
    let expected = fp::fingerprint_of_tar(Cursor::new(&tar)).unwrap();
    let conn = "etc/NetworkManager/system-connections/resin-wifi";
    let extra = |path: &str, data: &[u8]| ExtraFile {
        path: path.to_string(),
        data: data.to_vec(),
        mode: 0o600,
    };
    let extras = vec![
        extra(conn, b"[connection]\nid=resin-wifi\n"),
        extra("etc/app.conf", b"an existing path is kept"),
        extra("etc/app.conf/below-a-file", b"refused by the ext4 writer"),
    ];
    let img = t.path().join("slot.img");
    fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let (stream, done) = fp::embed_with(Cursor::new(tar.clone()), extras).unwrap();
    let dest = hup::ext4::Dest::image(&img, 16 << 20).unwrap();
    hup::ext4::mkfs_from_tar(&dest, &Default::default(), stream).unwrap();
    let recorded = done.get().unwrap();
    let debugfs = |cmd: String| {
        let o = Command::new("debugfs")
            .args(["-R", &cmd])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success());
        o.stdout
    };
    assert_eq!(
        Fingerprint::from_json(&debugfs(format!("cat /{EMBED_PATH}"))).unwrap(),
        recorded
    );
    assert_eq!(
        debugfs(format!("cat /{conn}")),
        b"[connection]\nid=resin-wifi\n"
    );
    assert_eq!(debugfs("cat /etc/app.conf".into()), b"port=80\n");
    let stat = String::from_utf8(debugfs(format!("stat /{conn}"))).unwrap();
    assert!(stat.contains("Mode:  0600"), "{stat}");
    // The record is the archive's fingerprint plus the added file and its new parents.
    let mut want = expected.clone();
    for (p, k) in [
        ("etc/NetworkManager", Kind::Dir),
        ("etc/NetworkManager/system-connections", Kind::Dir),
    ] {
        want.insert(fp::Entry::new(p.into(), k, 0o755, 0, 0));
    }
    let mut e = fp::Entry::new(conn.into(), Kind::File, 0o600, 0, 0);
    e.size = Some(27);
    e.sha256 = Some(hex::encode(sha2::Sha256::digest(
        b"[connection]\nid=resin-wifi\n",
    )));
    want.insert(e);
    assert_eq!(recorded, want);
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}
