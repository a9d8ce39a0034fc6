//! SBOMs of a built deb, in the two standard formats: SPDX 2.3 and CycloneDX 1.5, both
//! JSON. They list the deb itself (a `pkg:deb` purl and its sha256), every wheel
//! installed in its virtualenvs (a `pkg:pypi` purl, the wheel's sha256, the licence its
//! metadata declares when hb can state it), the sdists compiled into them, and as
//! build-time dependencies the build requirements and the target root's Debian
//! packages. Pure and deterministic: the time is the package's `source_date_epoch`,
//! the document namespace and serial number are derived from the content, and JSON
//! object keys come out sorted. `provenance` states how the deb was built, signed.

pub mod provenance;

use serde_json::{Value, json};
use sha2::Digest as _;

/// The deb the documents describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// The Debian suite it is built for (`bookworm`), the purl's `distro`.
    pub distro: String,
    /// `NAME_VERSION_ARCH.deb`.
    pub file_name: String,
    pub sha256: String,
    /// The package's own licence (its `license` setting), an SPDX expression.
    pub license: Option<String>,
}

/// A Python distribution file: a wheel installed in the venv, a build requirement, or
/// a compiled sdist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFile {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub license: Option<String>,
}

/// A Debian package of the target root the deb was built in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebFile {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
}

/// Everything an SBOM states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sbom {
    pub subject: Subject,
    /// Seconds since 1970: the documents' creation time.
    pub created: u64,
    /// `hb 0.1.0`.
    pub tool: (String, String),
    /// Installed in the package (sorted by name and version).
    pub runtime: Vec<PyFile>,
    /// The file names among `runtime` that come from the lock (the others were built:
    /// the app's own wheel, wheels compiled from sdists).
    pub locked: Vec<String>,
    /// Sdists compiled into installed wheels.
    pub sources: Vec<PyFile>,
    /// Build requirements (PEP 517 backends and their needs).
    pub build: Vec<PyFile>,
    /// The target root's packages.
    pub root: Vec<DebFile>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A name-based UUID (version 5 layout) from `seed`.
fn uuid(seed: &str) -> String {
    let h = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex(&b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// A purl's version or qualifier value, percent-encoded where purl requires it.
fn purl_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn deb_purl(name: &str, version: &str, arch: &str, distro: &str) -> String {
    format!("pkg:deb/debian/{name}@{}?arch={}&distro={}", purl_part(version), purl_part(arch), purl_part(distro))
}

pub fn pypi_purl(name: &str, version: &str) -> String {
    format!("pkg:pypi/{name}@{}", purl_part(version))
}

/// An SPDX identifier's idstring: letters, digits, `.` and `-`.
fn spdx_id(kind: &str, parts: &[&str]) -> String {
    let raw = parts.join("-");
    let clean: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    format!("SPDXRef-{kind}-{clean}")
}

impl Sbom {
    /// A digest of everything the documents state, for their namespace and serial.
    fn seed(&self) -> String {
        let mut s = format!("{:?}", self.subject);
        for list in [&self.runtime, &self.sources, &self.build] {
            for f in list {
                s.push_str(&format!("|{}={}:{}", f.name, f.version, f.sha256));
            }
        }
        for d in &self.root {
            s.push_str(&format!("|{}={}:{}", d.name, d.version, d.sha256));
        }
        hex(&sha2::Sha256::digest(s.as_bytes()))
    }

    fn subject_purl(&self) -> String {
        let s = &self.subject;
        deb_purl(&s.package, &s.version, &s.architecture, &s.distro)
    }

    fn timestamp(&self) -> String {
        hb_diff::time::iso8601_utc(i64::try_from(self.created).unwrap_or(i64::MAX))
    }

    /// The SPDX 2.3 document (JSON, keys sorted, two-space indent, final newline).
    pub fn spdx(&self) -> String {
        let s = &self.subject;
        let deb_id = spdx_id("Package", &["deb", &s.package]);
        let license = |l: &Option<String>| l.clone().unwrap_or_else(|| "NOASSERTION".to_string());
        let py = |kind: &str, f: &PyFile| {
            json!({
                "SPDXID": spdx_id(kind, &[&f.name, &f.version]),
                "name": f.name,
                "versionInfo": f.version,
                "packageFileName": f.file,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": f.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": license(&f.license),
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": pypi_purl(&f.name, &f.version),
                }],
                "primaryPackagePurpose": if kind == "Sdist" { "SOURCE" } else { "LIBRARY" },
            })
        };
        let mut packages = vec![json!({
            "SPDXID": deb_id,
            "name": s.package,
            "versionInfo": s.version,
            "packageFileName": s.file_name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": s.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license(&s.license),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": self.subject_purl(),
            }],
            "primaryPackagePurpose": "APPLICATION",
        })];
        let mut relationships = vec![json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": deb_id,
        })];
        let mut relate = |from: String, kind: &str, to: &str| {
            relationships.push(json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to}));
        };
        for f in &self.runtime {
            packages.push(py("Pypi", f));
            relate(deb_id.clone(), "CONTAINS", &spdx_id("Pypi", &[&f.name, &f.version]));
        }
        for f in &self.sources {
            packages.push(py("Sdist", f));
            relate(spdx_id("Sdist", &[&f.name, &f.version]), "GENERATES", &spdx_id("Pypi", &[&f.name, &f.version]));
        }
        for f in &self.build {
            packages.push(py("Build", f));
            relate(spdx_id("Build", &[&f.name, &f.version]), "BUILD_DEPENDENCY_OF", &deb_id);
        }
        for d in &self.root {
            let id = spdx_id("Deb", &[&d.name, &d.version, &d.architecture]);
            packages.push(json!({
                "SPDXID": id,
                "name": d.name,
                "versionInfo": d.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": deb_purl(&d.name, &d.version, &d.architecture, &s.distro),
                }],
                "primaryPackagePurpose": "OPERATING-SYSTEM",
            }));
            relate(id, "BUILD_DEPENDENCY_OF", &deb_id);
        }
        let doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": s.file_name,
            "documentNamespace": format!("urn:uuid:{}", uuid(&format!("spdx:{}", self.seed()))),
            "creationInfo": {
                "created": self.timestamp(),
                "creators": [format!("Tool: {}-{}", self.tool.0, self.tool.1)],
            },
            "documentDescribes": [deb_id],
            "packages": packages,
            "relationships": relationships,
        });
        render(&doc)
    }

    /// The CycloneDX 1.5 document (JSON, keys sorted, two-space indent, final newline).
    pub fn cyclonedx(&self) -> String {
        let s = &self.subject;
        let subject_ref = self.subject_purl();
        let licenses = |l: &Option<String>| match l {
            Some(e) => json!([{"expression": e}]),
            None => json!([]),
        };
        let py = |f: &PyFile, scope: &str| {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("{}#{}", pypi_purl(&f.name, &f.version), f.file),
                "name": f.name,
                "version": f.version,
                "purl": pypi_purl(&f.name, &f.version),
                "hashes": [{"alg": "SHA-256", "content": f.sha256}],
                "scope": scope,
                "properties": [{"name": "hb:file", "value": f.file}],
            });
            if f.license.is_some() {
                c["licenses"] = licenses(&f.license);
            }
            c
        };
        let mut components = Vec::new();
        let mut runtime_refs = Vec::new();
        for f in &self.runtime {
            let c = py(f, "required");
            runtime_refs.push(c["bom-ref"].clone());
            components.push(c);
        }
        for f in self.sources.iter().chain(&self.build) {
            components.push(py(f, "excluded"));
        }
        for d in &self.root {
            let purl = deb_purl(&d.name, &d.version, &d.architecture, &s.distro);
            components.push(json!({
                "type": "library",
                "bom-ref": purl,
                "name": d.name,
                "version": d.version,
                "purl": purl,
                "hashes": [{"alg": "SHA-256", "content": d.sha256}],
                "scope": "excluded",
                "properties": [{"name": "hb:role", "value": "target root"}],
            }));
        }
        let mut subject = json!({
            "type": "application",
            "bom-ref": subject_ref,
            "name": s.package,
            "version": s.version,
            "purl": subject_ref,
            "hashes": [{"alg": "SHA-256", "content": s.sha256}],
            "properties": [{"name": "hb:file", "value": s.file_name}],
        });
        if s.license.is_some() {
            subject["licenses"] = licenses(&s.license);
        }
        let doc = json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": format!("urn:uuid:{}", uuid(&format!("cyclonedx:{}", self.seed()))),
            "version": 1,
            "metadata": {
                "timestamp": self.timestamp(),
                "tools": {"components": [{"type": "application", "name": self.tool.0, "version": self.tool.1}]},
                "component": subject,
            },
            "components": components,
            "dependencies": [{"ref": subject_ref, "dependsOn": runtime_refs}],
        });
        render(&doc)
    }
}

fn render(v: &Value) -> String {
    let mut out = serde_json::to_string_pretty(v).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Sbom {
        Sbom {
            subject: Subject {
                package: "demosite".into(),
                version: "0.1.0+1".into(),
                architecture: "amd64".into(),
                distro: "bookworm".into(),
                file_name: "demosite_0.1.0+1_amd64.deb".into(),
                sha256: "a".repeat(64),
                license: Some("MIT".into()),
            },
            created: 1_700_000_000,
            tool: ("hb".into(), "0.1.0".into()),
            locked: vec!["flask-3.1.3-py3-none-any.whl".into()],
            runtime: vec![PyFile {
                name: "flask".into(),
                version: "3.1.3".into(),
                file: "flask-3.1.3-py3-none-any.whl".into(),
                sha256: "b".repeat(64),
                license: Some("BSD-3-Clause".into()),
            }],
            sources: Vec::new(),
            build: vec![PyFile {
                name: "setuptools".into(),
                version: "84.2.1".into(),
                file: "setuptools-84.2.1-py3-none-any.whl".into(),
                sha256: "c".repeat(64),
                license: None,
            }],
            root: vec![DebFile {
                name: "libc6".into(),
                version: "2.36-9+deb12u10".into(),
                architecture: "amd64".into(),
                sha256: "d".repeat(64),
            }],
        }
    }

    #[test]
    fn documents_are_deterministic_and_name_what_they_list() {
        let a = sample();
        assert_eq!(a.spdx(), sample().spdx());
        assert_eq!(a.cyclonedx(), sample().cyclonedx());
        let spdx: Value = serde_json::from_str(&a.spdx()).unwrap();
        assert_eq!(spdx["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            spdx["packages"][0]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/demosite@0.1.0%2B1?arch=amd64&distro=bookworm"
        );
        assert_eq!(spdx["packages"][1]["checksums"][0]["checksumValue"], "b".repeat(64));
        assert_eq!(
            spdx["packages"][3]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=bookworm"
        );
        let cdx: Value = serde_json::from_str(&a.cyclonedx()).unwrap();
        let serial = cdx["serialNumber"].as_str().unwrap();
        assert!(serial.starts_with("urn:uuid:") && serial.as_bytes()[23] == b'5', "{serial}");
        assert_eq!(cdx["components"][0]["purl"], "pkg:pypi/flask@3.1.3");
        assert_eq!(cdx["components"][1]["scope"], "excluded");
        // Another deb, another namespace.
        let mut b = sample();
        b.subject.sha256 = "e".repeat(64);
        let other: Value = serde_json::from_str(&b.spdx()).unwrap();
        assert_ne!(other["documentNamespace"], spdx["documentNamespace"]);
    }
}
