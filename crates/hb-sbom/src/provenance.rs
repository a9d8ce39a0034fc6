//! Build provenance of a deb: an in-toto Statement v1 with the SLSA Provenance v1
//! predicate (the deb as subject; the label, platform and the package's layout digest
//! as external parameters; every locked wheel, sdist, build requirement and root
//! package as a resolved dependency with its sha256; hb and its version as the
//! builder), wrapped in a DSSE envelope signed with an ed25519 key, and the checks of
//! `hb provenance verify`. Deterministic: ed25519 signatures are, and nothing
//! time-dependent is stated but the package's `source_date_epoch`.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Value, json};

use crate::{Sbom, deb_purl, pypi_purl};

/// The DSSE payload type of in-toto statements.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build this is (a URI, as SLSA asks; no host is named).
pub const BUILD_TYPE: &str = "urn:hb:build-type:deb:v1";

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("the provenance is not a DSSE envelope of an in-toto statement: {0}")]
    Malformed(String),
    #[error(
        "the provenance is signed only by untrusted keys ({0}); trust the builder's public key (remote_trusted_keys, HB_REMOTE_TRUSTED_KEYS or --key)"
    )]
    Untrusted(String),
    #[error("a signature of the provenance does not verify: the statement was altered after signing")]
    BadSignature,
}

/// The statement of `sbom`'s deb, built as `label` for `platform`; `layout` is the
/// blake3 tree digest of the package's files.
pub fn statement(sbom: &Sbom, label: &str, platform: &str, layout: &str) -> String {
    let s = &sbom.subject;
    let mut deps = Vec::new();
    let mut byproducts = Vec::new();
    let entry = |f: &crate::PyFile| json!({"name": f.file, "uri": pypi_purl(&f.name, &f.version), "digest": {"sha256": f.sha256}});
    for f in &sbom.runtime {
        // Wheels the build made (the app's, compiled sdists) are products, not inputs.
        if sbom.locked.contains(&f.file) { deps.push(entry(f)) } else { byproducts.push(entry(f)) }
    }
    for f in sbom.sources.iter().chain(&sbom.build) {
        deps.push(entry(f));
    }
    for d in &sbom.root {
        deps.push(json!({
            "name": format!("{}_{}_{}", d.name, d.version, d.architecture),
            "uri": deb_purl(&d.name, &d.version, &d.architecture, &s.distro),
            "digest": {"sha256": d.sha256},
        }));
    }
    let doc = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.file_name, "digest": {"sha256": s.sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "label": label,
                    "platform": platform,
                    "layout": {"blake3": layout},
                },
                "internalParameters": {"source_date_epoch": sbom.created},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": format!("urn:hb:builder:{}@{}", sbom.tool.0, sbom.tool.1),
                    "version": {sbom.tool.0.clone(): sbom.tool.1},
                },
                "byproducts": byproducts,
            },
        },
    });
    serde_json::to_string(&doc).unwrap_or_default()
}

/// DSSE's pre-authentication encoding of a payload.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The envelope of `statement` signed by `key`: one JSON line.
pub fn envelope(statement: &str, key: &SigningKey) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = key.sign(&pae(PAYLOAD_TYPE, statement.as_bytes()));
    let keyid = hex(key.verifying_key().as_bytes());
    let doc = json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": b64.encode(statement.as_bytes()),
        "signatures": [{"keyid": keyid, "sig": b64.encode(sig.to_bytes())}],
    });
    let mut out = serde_json::to_string(&doc).unwrap_or_default();
    out.push('\n');
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A verified statement: who signed it, and what it says.
#[derive(Debug)]
pub struct Verified {
    pub keyid: String,
    pub statement: Value,
}

impl Verified {
    /// The subject's name and sha256.
    pub fn subject(&self) -> Option<(&str, &str)> {
        let s = self.statement.get("subject")?.get(0)?;
        Some((s.get("name")?.as_str()?, s.get("digest")?.get("sha256")?.as_str()?))
    }

    /// Every resolved dependency: name, uri, sha256.
    pub fn dependencies(&self) -> Vec<(String, String, String)> {
        let deps = self.statement.pointer("/predicate/buildDefinition/resolvedDependencies");
        deps.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| {
                        Some((
                            d.get("name")?.as_str()?.to_string(),
                            d.get("uri")?.as_str()?.to_string(),
                            d.get("digest")?.get("sha256")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An external parameter (`label`, `platform`).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.statement.pointer(&format!("/predicate/buildDefinition/externalParameters/{name}"))?.as_str()
    }
}

/// Opens an envelope: a signature by one of `trusted` over its payload, which must be
/// an in-toto statement with the SLSA provenance predicate.
pub fn open(text: &str, trusted: &[VerifyingKey]) -> Result<Verified, ProvenanceError> {
    let bad = |why: &str| ProvenanceError::Malformed(why.to_string());
    let b64 = base64::engine::general_purpose::STANDARD;
    let env: Value = serde_json::from_str(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if env.get("payloadType").and_then(Value::as_str) != Some(PAYLOAD_TYPE) {
        return Err(bad("its payloadType is not an in-toto statement"));
    }
    let payload = env
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| b64.decode(p).ok())
        .ok_or_else(|| bad("its payload is not base64"))?;
    let sigs = env.get("signatures").and_then(Value::as_array).ok_or_else(|| bad("it has no signatures"))?;
    let message = pae(PAYLOAD_TYPE, &payload);
    let mut untrusted = Vec::new();
    let mut signer = None;
    for s in sigs {
        let keyid = s.get("keyid").and_then(Value::as_str).unwrap_or_default();
        let Some(key) = trusted.iter().find(|k| hex(k.as_bytes()) == keyid) else {
            untrusted.push(if keyid.is_empty() { "no keyid".to_string() } else { keyid.to_string() });
            continue;
        };
        let sig = s
            .get("sig")
            .and_then(Value::as_str)
            .and_then(|v| b64.decode(v).ok())
            .and_then(|v| ed25519_dalek::Signature::from_slice(&v).ok())
            .ok_or(ProvenanceError::BadSignature)?;
        key.verify(&message, &sig).map_err(|_| ProvenanceError::BadSignature)?;
        signer = Some(keyid.to_string());
    }
    let Some(keyid) = signer else { return Err(ProvenanceError::Untrusted(untrusted.join(", "))) };
    let statement: Value = serde_json::from_slice(&payload).map_err(|e| bad(&e.to_string()))?;
    if statement.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE)
        || statement.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE)
    {
        return Err(bad("the statement is not SLSA provenance v1"));
    }
    Ok(Verified { keyid, statement })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signed_statements_open_only_with_a_trusted_key_and_unaltered() {
        let sbom = crate::tests::sample();
        let st = statement(&sbom, "//demosite:deb", "bookworm-amd64", "abc");
        assert_eq!(st, statement(&sbom, "//demosite:deb", "bookworm-amd64", "abc"));
        let env = envelope(&st, &key(1));
        assert_eq!(env, envelope(&st, &key(1)), "ed25519 signatures are deterministic");
        let v = open(&env, &[key(1).verifying_key()]).unwrap();
        assert_eq!(v.subject(), Some(("demosite_0.1.0+1_amd64.deb", "a".repeat(64).as_str())));
        assert_eq!(v.parameter("label"), Some("//demosite:deb"));
        assert!(
            v.dependencies().iter().any(|(n, u, _)| n == "flask-3.1.3-py3-none-any.whl" && u == "pkg:pypi/flask@3.1.3")
        );
        let err = open(&env, &[key(2).verifying_key()]).unwrap_err();
        assert!(matches!(err, ProvenanceError::Untrusted(_)), "{err}");
        // The payload changed after signing.
        let b64 = base64::engine::general_purpose::STANDARD;
        let forged = st.replace("//demosite:deb", "//evil:deb");
        let doc: Value = serde_json::from_str(&env).unwrap();
        let mut doc = doc;
        doc["payload"] = Value::String(b64.encode(forged.as_bytes()));
        let err = open(&doc.to_string(), &[key(1).verifying_key()]).unwrap_err();
        assert!(matches!(err, ProvenanceError::BadSignature), "{err}");
        assert!(matches!(open("{}", &[]).unwrap_err(), ProvenanceError::Malformed(_)));
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }
}
