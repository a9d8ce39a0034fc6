//! `deb_sbom`: the SPDX 2.3 and CycloneDX 1.5 documents of a built deb (`hb-sbom`),
//! written next to it as `NAME_VERSION_ARCH.spdx.json` and `.cdx.json`. Its inputs
//! are the deb (for its sha256) and the venvs' facts (every installed wheel with its
//! sha256 and declared licence); its arguments are what the plan knows (the build
//! requirements and sdists of the lock, the target root's packages of hb-root.lock,
//! the package's `source_date_epoch`). It is the deb target's output action: its tree
//! holds the deb (the same blob) and both documents, all three exported. With a
//! signing key it also writes the deb's signed provenance (`.intoto.jsonl`: an in-toto
//! statement with the SLSA provenance predicate in a DSSE envelope); only the key's
//! public half is in the action's key.

use hb_engine::{Action, AnyInput, Ctx, Input, Inputs, JobError, Output, Source, encode_args};
use hb_store::{EntryKind, Tree, TreeEntry};
use serde::Serialize;

use crate::actions::python::VenvFacts;

/// One file the plan knows by name, version and sha256.
#[derive(Clone, Debug, Serialize)]
pub struct Known {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
}

/// `deb_sbom` of one deb.
pub struct SbomJob {
    pub label: String,
    /// The deb's action (its tree is the one `.deb`).
    pub deb: AnyInput,
    /// The package layout (its tree digest is stated in the provenance).
    pub layout: AnyInput,
    pub platform: String,
    pub signer: Option<std::sync::Arc<ed25519_dalek::SigningKey>>,
    pub file_name: String,
    pub venvs: Vec<Input<VenvFacts>>,
    pub args: SbomArgs,
}

/// Everything else the documents say.
#[derive(Clone, Debug, Serialize)]
pub struct SbomArgs {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub distro: String,
    pub license: Option<String>,
    pub created: u64,
    pub sources: Vec<Known>,
    pub build: Vec<Known>,
    /// The runtime wheels of the locks (file names).
    pub locked: Vec<String>,
    /// The root's packages: name, version, architecture, sha256.
    pub root: Vec<(String, String, String, String)>,
}

impl SbomJob {
    /// `NAME_VERSION_ARCH.spdx.json` and `.cdx.json`.
    pub fn file_names(deb: &str) -> (String, String) {
        let stem = deb.strip_suffix(".deb").unwrap_or(deb);
        (format!("{stem}.spdx.json"), format!("{stem}.cdx.json"))
    }

    /// `NAME_VERSION_ARCH.intoto.jsonl`.
    pub fn provenance_name(deb: &str) -> String {
        format!("{}.intoto.jsonl", deb.strip_suffix(".deb").unwrap_or(deb))
    }
}

impl Action for SbomJob {
    type Facts = ();
    const KIND: &'static str = "deb_sbom";
    const VERSION: u32 = 2;
    fn args(&self) -> Vec<u8> {
        let signer: Option<[u8; 32]> = self.signer.as_ref().map(|k| k.verifying_key().to_bytes());
        encode_args(&(&self.file_name, &self.args, env!("CARGO_PKG_VERSION"), &self.label, &self.platform, signer))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        [self.deb, self.layout].into_iter().chain(self.venvs.iter().map(Input::any)).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let deb_tree = inputs.tree(self.deb)?;
        let Some((digest, size)) = deb_tree.entries().iter().find_map(|e| match &e.kind {
            EntryKind::File { digest, size } if e.path == self.file_name => Some((*digest, *size)),
            _ => None,
        }) else {
            return Err(JobError::Failed(format!("{}: the deb action holds no {}", self.label, self.file_name)));
        };
        let sha256 = {
            use sha2::Digest as _;
            let bytes = ctx.store.read_blob(&digest)?;
            sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let mut runtime: Vec<hb_sbom::PyFile> = Vec::new();
        for v in &self.venvs {
            for i in inputs.get(v)?.1.installed.clone() {
                let f = hb_sbom::PyFile {
                    name: i.name,
                    version: i.version,
                    file: i.wheel,
                    sha256: i.sha256,
                    license: i.license,
                };
                if !runtime.contains(&f) {
                    runtime.push(f);
                }
            }
        }
        runtime.sort_by(|a, b| (&a.name, &a.version, &a.file).cmp(&(&b.name, &b.version, &b.file)));
        let known = |k: &[Known]| {
            k.iter()
                .map(|k| hb_sbom::PyFile {
                    name: k.name.clone(),
                    version: k.version.clone(),
                    file: k.file.clone(),
                    sha256: k.sha256.clone(),
                    license: None,
                })
                .collect()
        };
        let a = &self.args;
        let sbom = hb_sbom::Sbom {
            subject: hb_sbom::Subject {
                package: a.package.clone(),
                version: a.version.clone(),
                architecture: a.architecture.clone(),
                distro: a.distro.clone(),
                file_name: self.file_name.clone(),
                sha256,
                license: a.license.clone(),
            },
            created: a.created,
            tool: ("hb".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            runtime,
            locked: a.locked.clone(),
            sources: known(&a.sources),
            build: known(&a.build),
            root: a
                .root
                .iter()
                .map(|(name, version, architecture, sha256)| hb_sbom::DebFile {
                    name: name.clone(),
                    version: version.clone(),
                    architecture: architecture.clone(),
                    sha256: sha256.clone(),
                })
                .collect(),
        };
        let (spdx_name, cdx_name) = SbomJob::file_names(&self.file_name);
        let mut entries = vec![TreeEntry::file(self.file_name.clone(), digest, size, false)];
        for (name, text) in [(&spdx_name, sbom.spdx()), (&cdx_name, sbom.cyclonedx())] {
            let d = ctx.store.put_bytes(text.as_bytes())?;
            entries.push(TreeEntry::file(name.clone(), d, text.len() as u64, false));
        }
        let mut exports = vec![self.file_name.clone(), spdx_name, cdx_name];
        if let Some(key) = &self.signer {
            let layout = inputs.tree(self.layout)?.digest().hex();
            let statement = hb_sbom::provenance::statement(&sbom, &self.label, &self.platform, &layout);
            let text = hb_sbom::provenance::envelope(&statement, key);
            let name = SbomJob::provenance_name(&self.file_name);
            let d = ctx.store.put_bytes(text.as_bytes())?;
            entries.push(TreeEntry::file(name.clone(), d, text.len() as u64, false));
            exports.push(name);
        }
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output { tree, facts: (), exports })
    }
}
