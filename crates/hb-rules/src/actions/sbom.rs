//! `deb_sbom`: the SPDX 2.3 and CycloneDX 1.5 documents of a built deb (`hb-sbom`),
//! written next to it as `NAME_VERSION_ARCH.spdx.json` and `.cdx.json`. Its inputs
//! are the deb (for its sha256) and the venvs' facts (every installed wheel with its
//! sha256 and declared licence); its arguments are what the plan knows (the build
//! requirements and sdists of the lock, the target root's packages of hb-root.lock,
//! the package's `source_date_epoch`). It is the deb target's output action: its tree
//! holds the deb (the same blob) and both documents, all three exported.
//!
//! `deb_provenance`, added only when a signing key is configured, takes the SBOM
//! action's tree and adds the deb's signed provenance (`.intoto.jsonl`: an in-toto
//! statement with the SLSA provenance predicate in a DSSE envelope), and is then the
//! target's output. Only the key's public half is in its key; the SBOM action is the
//! same for a teammate without the key, so a shared cache serves it.

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
    /// The root's packages: name, version, architecture, sha256 (shared by every deb
    /// of the plan; encoded as the list itself).
    pub root: crate::roots::RootSummary,
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
        encode_args(&(&self.file_name, &self.args, env!("CARGO_PKG_VERSION")))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        std::iter::once(self.deb).chain(self.venvs.iter().map(Input::any)).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let (sbom, digest, size) =
            sbom_of(ctx, inputs, &self.label, self.deb, &self.file_name, &self.venvs, &self.args)?;
        let (spdx_name, cdx_name) = SbomJob::file_names(&self.file_name);
        let mut entries = vec![TreeEntry::file(self.file_name.clone(), digest, size, false)];
        for (name, text) in [(&spdx_name, sbom.spdx()), (&cdx_name, sbom.cyclonedx())] {
            let d = ctx.store.put_bytes(text.as_bytes())?;
            entries.push(TreeEntry::file(name.clone(), d, text.len() as u64, false));
        }
        let exports = vec![self.file_name.clone(), spdx_name, cdx_name];
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output { tree, facts: (), exports })
    }
}

/// What the SBOM says of one deb: the deb's sha256 read from its blob, the venvs'
/// installed wheels, and the plan's arguments. Returns it with the deb's blob.
fn sbom_of(
    ctx: &Ctx,
    inputs: &Inputs,
    label: &str,
    deb: AnyInput,
    file_name: &str,
    venvs: &[Input<VenvFacts>],
    a: &SbomArgs,
) -> Result<(hb_sbom::Sbom, hb_store::Digest, u64), JobError> {
    let deb_tree = inputs.tree(deb)?;
    let Some((digest, size)) = deb_tree.entries().iter().find_map(|e| match &e.kind {
        EntryKind::File { digest, size } if e.path == file_name => Some((*digest, *size)),
        _ => None,
    }) else {
        return Err(JobError::Failed(format!("{}: the deb action holds no {}", label, file_name)));
    };
    let sha256 = {
        use sha2::Digest as _;
        // Streamed: a deb may be larger than memory should hold.
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut ctx.store.open_blob(&digest)?, &mut hasher)?;
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let mut runtime: Vec<hb_sbom::PyFile> = Vec::new();
    for v in venvs {
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
    let sbom = hb_sbom::Sbom {
        subject: hb_sbom::Subject {
            package: a.package.clone(),
            version: a.version.clone(),
            architecture: a.architecture.clone(),
            distro: a.distro.clone(),
            file_name: file_name.to_string(),
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
    Ok((sbom, digest, size))
}

/// `deb_provenance`: the SBOM action's files plus the deb's signed provenance.
pub struct ProvenanceJob {
    pub label: String,
    pub platform: String,
    /// The SBOM action (its tree: the deb and both documents).
    pub sbom: AnyInput,
    /// The deb's action, and what the SBOM action read, to state the same inputs.
    pub deb: AnyInput,
    pub file_name: String,
    pub venvs: Vec<Input<VenvFacts>>,
    pub args: SbomArgs,
    /// The package layout: its tree digest is stated as an external parameter.
    pub layout: AnyInput,
    pub signer: std::sync::Arc<ed25519_dalek::SigningKey>,
}

impl Action for ProvenanceJob {
    type Facts = ();
    const KIND: &'static str = "deb_provenance";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        let public = self.signer.verifying_key().to_bytes();
        encode_args(&(&self.file_name, &self.args, env!("CARGO_PKG_VERSION"), &self.label, &self.platform, public))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        [self.sbom, self.deb, self.layout].into_iter().chain(self.venvs.iter().map(Input::any)).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let (sbom, _, _) = sbom_of(ctx, inputs, &self.label, self.deb, &self.file_name, &self.venvs, &self.args)?;
        let layout = inputs.tree(self.layout)?.digest().hex();
        let statement = hb_sbom::provenance::statement(&sbom, &self.label, &self.platform, &layout);
        let text = hb_sbom::provenance::envelope(&statement, &self.signer);
        let name = SbomJob::provenance_name(&self.file_name);
        let mut entries: Vec<TreeEntry> = inputs.tree(self.sbom)?.entries().to_vec();
        let mut exports: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
        let d = ctx.store.put_bytes(text.as_bytes())?;
        entries.push(TreeEntry::file(name.clone(), d, text.len() as u64, false));
        exports.push(name);
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output { tree, facts: (), exports })
    }
}
