//! Bundles (`*.hup`): a tar of `manifest.json`, its minisign signature and the payloads
//! (docs/bundle-format.md).

pub mod delta;
pub mod delta_base;
pub mod delta_check;
pub mod delta_expand;
pub mod delta_pack;
pub mod pack;
pub mod reader;
pub mod sign;
pub mod stream;
pub mod tree;
pub mod verified;
pub mod writer;

/// First member: the manifest.
pub const MANIFEST: &str = "manifest.json";
/// Second member: the minisign signature of the manifest's exact bytes.
pub const SIGNATURE: &str = "manifest.json.minisig";
