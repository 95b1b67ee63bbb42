//! minisign-format keys and signatures (Ed25519 over BLAKE2b-512 of the data).
//!
//! Signing is written here rather than with the `minisign` crate because that crate adds
//! random noise to every signature; RFC 8032 Ed25519 is deterministic, which keeps
//! `hup pack` byte-reproducible. Verification uses the independent `minisign-verify`
//! crate, and a test checks our signatures with the `minisign` tool itself.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest as _;
use ed25519_dalek::Signer as _;

const SIG_ALG: &[u8; 2] = b"Ed";
const SIG_ALG_PREHASHED: &[u8; 2] = b"ED";
const CHK_ALG: &[u8; 2] = b"B2";
const KDF_NONE: &[u8; 2] = &[0, 0];
/// sig_alg, kdf_alg, chk_alg, salt(32), opslimit(8), memlimit(8), keynum(8), sk(64), chk(32).
const SECRET_KEY_BYTES: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// Largest signature file accepted (a minisign signature is about 300 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A secret signing key (unencrypted minisign secret key file).
#[derive(Debug)]
pub struct SecretKey {
    keynum: [u8; 8],
    signing: ed25519_dalek::SigningKey,
}

/// A trusted public key, with the file it came from for messages.
#[derive(Debug)]
pub struct PublicKey {
    pub key: minisign_verify::PublicKey,
    pub key_id: String,
    pub source: PathBuf,
}

fn key_id_hex(keynum: &[u8; 8]) -> String {
    // minisign prints key ids as the little-endian u64 in uppercase hex.
    format!("{:016X}", u64::from_le_bytes(*keynum))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("reading random bytes: {e}"))?;
    Ok(b)
}

/// Writes `PREFIX.key` and `PREFIX.pub`; refuses to overwrite either. Returns the key id.
pub fn keygen(prefix: &Path) -> Result<String> {
    let sk_path = with_suffix(prefix, "key");
    let pk_path = with_suffix(prefix, "pub");
    for p in [&sk_path, &pk_path] {
        ensure!(
            !p.exists(),
            "{} already exists: refusing to overwrite a key",
            p.display()
        );
    }
    let seed: [u8; 32] = random()?;
    let keynum: [u8; 8] = random()?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pk = signing.verifying_key().to_bytes();
    let mut sk64 = [0u8; 64];
    sk64[..32].copy_from_slice(&seed);
    sk64[32..].copy_from_slice(&pk);
    let chk = blake2::Blake2b256::new()
        .chain_update(SIG_ALG)
        .chain_update(keynum)
        .chain_update(sk64)
        .finalize();
    let mut skb = Vec::with_capacity(SECRET_KEY_BYTES);
    skb.extend_from_slice(SIG_ALG);
    skb.extend_from_slice(KDF_NONE);
    skb.extend_from_slice(CHK_ALG);
    skb.extend_from_slice(&[0u8; 32 + 8 + 8]);
    skb.extend_from_slice(&keynum);
    skb.extend_from_slice(&sk64);
    skb.extend_from_slice(&chk);
    let mut pkb = Vec::with_capacity(42);
    pkb.extend_from_slice(SIG_ALG);
    pkb.extend_from_slice(&keynum);
    pkb.extend_from_slice(&pk);
    let id = key_id_hex(&keynum);
    let sk_text = format!(
        "untrusted comment: hup secret key {id} (unencrypted)\n{}\n",
        B64.encode(&skb)
    );
    let pk_text = format!(
        "untrusted comment: minisign public key {id}\n{}\n",
        B64.encode(&pkb)
    );
    write_new(&sk_path, sk_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pk_path, pk_text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&sk_path);
        return Err(e);
    }
    Ok(id)
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The base64 line of a minisign key or signature file (the first line that is not a comment).
fn data_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
}

impl SecretKey {
    /// Loads an unencrypted minisign secret key.
    pub fn load(path: &Path) -> Result<SecretKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading secret key {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("secret key {}", path.display()))
    }

    fn parse(text: &str) -> Result<SecretKey> {
        let line = data_line(text).context("no key data")?;
        let b = B64.decode(line).context("key data is not base64")?;
        ensure!(
            b.len() == SECRET_KEY_BYTES,
            "not a minisign secret key ({} bytes)",
            b.len()
        );
        ensure!(&b[0..2] == SIG_ALG, "unsupported signature algorithm");
        if &b[2..4] != KDF_NONE {
            bail!(
                "the key is password-protected; hup signs with unencrypted keys (hup keygen, or minisign -G -W)"
            );
        }
        ensure!(&b[4..6] == CHK_ALG, "unsupported checksum algorithm");
        let keynum: [u8; 8] = b[54..62].try_into().expect("8 bytes");
        let sk64 = &b[62..126];
        let chk = blake2::Blake2b256::new()
            .chain_update(SIG_ALG)
            .chain_update(keynum)
            .chain_update(sk64)
            .finalize();
        ensure!(
            chk.as_slice() == &b[126..158],
            "checksum mismatch: the key file is corrupt"
        );
        let seed: [u8; 32] = sk64[..32].try_into().expect("32 bytes");
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        ensure!(
            signing.verifying_key().to_bytes() == sk64[32..],
            "public half does not match the secret half: the key file is corrupt"
        );
        Ok(SecretKey { keynum, signing })
    }

    /// Signs `data` and returns the signature file text (minisign format, prehashed).
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        let hash = blake2::Blake2b512::digest(data);
        let sig = self.signing.sign(&hash).to_bytes();
        let mut sig_line = Vec::with_capacity(74);
        sig_line.extend_from_slice(SIG_ALG_PREHASHED);
        sig_line.extend_from_slice(&self.keynum);
        sig_line.extend_from_slice(&sig);
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&sig);
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_sig = self.signing.sign(&global).to_bytes();
        format!(
            "untrusted comment: signature from hup secret key {}\n{}\ntrusted comment: {}\n{}\n",
            key_id_hex(&self.keynum),
            B64.encode(&sig_line),
            trusted_comment,
            B64.encode(global_sig)
        )
    }
}

impl PublicKey {
    /// Loads a minisign public key file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading public key {}", path.display()))?;
        let line = data_line(&text)
            .with_context(|| format!("public key {}: no key data", path.display()))?;
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|e| anyhow::anyhow!("public key {}: {e}", path.display()))?;
        let raw = B64.decode(line).context("base64")?;
        let keynum: [u8; 8] = raw[2..10].try_into().expect("checked by from_base64");
        Ok(PublicKey {
            key,
            key_id: key_id_hex(&keynum),
            source: path.to_path_buf(),
        })
    }
}

/// The set of keys a device (or a `hup verify` call) trusts.
#[derive(Debug)]
pub struct TrustedKeys(pub Vec<PublicKey>);

impl TrustedKeys {
    /// Loads the given key files and every `*.pub` in the given directories.
    pub fn load(files: &[PathBuf], dirs: &[PathBuf]) -> Result<TrustedKeys> {
        let mut keys = Vec::new();
        for f in files {
            keys.push(PublicKey::load(f)?);
        }
        for d in dirs {
            let mut found: Vec<PathBuf> = std::fs::read_dir(d)
                .with_context(|| format!("reading key directory {}", d.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pub"))
                .collect();
            found.sort();
            // One broken file in a key directory must not block every update.
            for f in found {
                match PublicKey::load(&f) {
                    Ok(k) => keys.push(k),
                    Err(e) => log::warn!("skipping key file {}: {e:#}", f.display()),
                }
            }
        }
        ensure!(
            !keys.is_empty(),
            "no trusted public keys given (use --key FILE or --keys DIR)"
        );
        Ok(TrustedKeys(keys))
    }

    /// Checks a minisign signature of `data`; returns the trusted key's id and the trusted comment.
    pub fn verify(&self, data: &[u8], signature_text: &str) -> Result<(String, String)> {
        let sig = minisign_verify::Signature::decode(signature_text)
            .map_err(|e| anyhow::anyhow!("malformed signature: {e}"))?;
        let sig_id = signature_key_id(signature_text).unwrap_or_else(|| "?".into());
        let mut matched = false;
        for k in &self.0 {
            match k.key.verify(data, &sig, false) {
                Ok(()) => return Ok((k.key_id.clone(), sig.trusted_comment().to_string())),
                Err(minisign_verify::Error::UnexpectedKeyId) => {}
                Err(_) => matched = true,
            }
        }
        if matched {
            bail!("signature does not match (signed by key {sig_id}, but the signed bytes differ)")
        }
        let trusted: Vec<&str> = self.0.iter().map(|k| k.key_id.as_str()).collect();
        bail!(
            "signed by key {sig_id}, which is not trusted (trusted: {})",
            trusted.join(", ")
        )
    }
}

/// The key id a signature claims, for messages.
fn signature_key_id(text: &str) -> Option<String> {
    let b = B64.decode(data_line(text)?).ok()?;
    let keynum: [u8; 8] = b.get(2..10)?.try_into().ok()?;
    Some(key_id_hex(&keynum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        keygen(&a).unwrap();
        keygen(&b).unwrap();
        assert!(
            keygen(&a)
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
        let sk = SecretKey::load(&with_suffix(&a, "key")).unwrap();
        let sig = sk.sign(b"hello", "hup test");
        assert_eq!(
            sig,
            sk.sign(b"hello", "hup test"),
            "signatures are deterministic"
        );
        let ta = TrustedKeys::load(&[with_suffix(&a, "pub")], &[]).unwrap();
        let tb = TrustedKeys::load(&[with_suffix(&b, "pub")], &[]).unwrap();
        assert_eq!(ta.verify(b"hello", &sig).unwrap().1, "hup test");
        let e = ta.verify(b"hellO", &sig).unwrap_err().to_string();
        assert!(e.contains("signed bytes differ"), "{e}");
        let e = tb.verify(b"hello", &sig).unwrap_err().to_string();
        assert!(e.contains("not trusted"), "{e}");
        let both = TrustedKeys::load(&[], &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(both.0.len(), 2);
        assert!(both.verify(b"hello", &sig).is_ok());
        // A changed trusted comment breaks the global signature.
        let forged = sig.replace("trusted comment: hup test", "trusted comment: hup tesT");
        assert!(ta.verify(b"hello", &forged).is_err());
    }

    #[test]
    fn corrupt_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        keygen(&a).unwrap();
        let text = std::fs::read_to_string(with_suffix(&a, "key")).unwrap();
        let line = data_line(&text).unwrap();
        let mut raw = B64.decode(line).unwrap();
        raw[100] ^= 1;
        let bad = format!("untrusted comment: x\n{}\n", B64.encode(&raw));
        assert!(SecretKey::parse(&bad).is_err());
    }
}
