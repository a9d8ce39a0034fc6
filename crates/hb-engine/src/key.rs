//! Action keys: blake3 over a canonical, versioned postcard encoding of what determines
//! an action's output — its kind and version, the digest of its canonical arguments, the
//! target platform, and the digests of its inputs, in a fixed order. Nothing else (no paths of the build
//! machine, no time, no environment) can reach a key, because nothing else is encoded.

use serde::{Deserialize, Serialize};

use hb_store::Digest;

/// Bumped whenever the encoding below or the meaning of any action changes globally.
/// 3: the arguments enter as their digest (the same digest `hb explain` compares), so
/// they are hashed once and never copied.
pub const KEY_SCHEMA: u32 = 3;

#[derive(Serialize)]
struct KeyMaterial<'a> {
    schema: u32,
    kind: &'a str,
    kind_version: u32,
    platform: &'a str,
    args: Digest,
    inputs: &'a [(String, Digest)],
}

/// Computes the key of an action from the digest of its canonical arguments.
pub fn action_key(kind: &str, kind_version: u32, platform: &str, args: Digest, inputs: &[(String, Digest)]) -> Digest {
    let m = KeyMaterial { schema: KEY_SCHEMA, kind, kind_version, platform, args, inputs };
    Digest::of(&postcard::to_stdvec(&m).expect("key material encodes"))
}

/// Canonical encoding of action arguments (postcard of a struct with no maps).
pub fn encode_args<T: Serialize>(args: &T) -> Vec<u8> {
    postcard::to_stdvec(args).expect("action arguments encode")
}

/// What an action produced, as stored: a tree of outputs plus the producing action's
/// typed facts in their canonical encoding (see [`crate::Output`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub tree: hb_store::Tree,
    pub facts: Vec<u8>,
    /// Paths of `tree` to place in `hb-out/` when the target is requested.
    pub exports: Vec<String>,
}

const RESULT_MAGIC: &[u8; 8] = b"hbres\x00\x00\x02";

impl ActionResult {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = RESULT_MAGIC.to_vec();
        v.extend(postcard::to_stdvec(self).expect("results encode"));
        v
    }

    /// Decodes a cache entry; anything unreadable is treated as absent.
    pub fn decode(bytes: &[u8]) -> Option<ActionResult> {
        postcard::from_bytes(bytes.strip_prefix(RESULT_MAGIC.as_slice())?).ok()
    }

    /// [`ActionResult::decode`], with the digest of `bytes` as the result's digest
    /// (saving the re-encoding [`ActionResult::digest`] would do). Bytes with anything
    /// after the encoded result are refused, so the digest names exactly what decoded.
    pub fn decode_with_digest(bytes: &[u8]) -> Option<(ActionResult, Digest)> {
        let (result, rest) = postcard::take_from_bytes(bytes.strip_prefix(RESULT_MAGIC.as_slice())?).ok()?;
        rest.is_empty().then(|| (result, Digest::of(bytes)))
    }

    /// The digest dependents see as this result.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let i = vec![("src".to_string(), Digest::of(b"a"))];
        let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
        let base = action_key("k", 1, "p", x, &i);
        assert_eq!(base, action_key("k", 1, "p", x, &i));
        assert_ne!(base, action_key("k2", 1, "p", x, &i));
        assert_ne!(base, action_key("k", 2, "p", x, &i));
        assert_ne!(base, action_key("k", 1, "q", x, &i));
        assert_ne!(base, action_key("k", 1, "p", y, &i));
        assert_ne!(base, action_key("k", 1, "p", x, &[("src".to_string(), Digest::of(b"b"))]));
    }

    #[test]
    fn results_round_trip() {
        let r = ActionResult { facts: vec![3], ..Default::default() };
        assert_eq!(ActionResult::decode(&r.encode()), Some(r.clone()));
        assert_eq!(ActionResult::decode(b"garbage"), None);
        let bytes = r.encode();
        assert_eq!(ActionResult::decode_with_digest(&bytes), Some((r.clone(), r.digest())));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(ActionResult::decode_with_digest(&longer), None);
    }
}
