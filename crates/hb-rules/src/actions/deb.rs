//! The actions of a `deb` target:
//!
//! - `deb_layout` merges the dependencies' trees into the package's file system and adds
//!   every parent directory;
//! - `deb_control` writes the control member (control, md5sums, conffiles);
//! - `deb_data` writes the data member as independently compressed chunks of whole tar
//!   entries, each chunk a cached sub-action (`deb_data_chunk`), so an edit recompresses
//!   only the chunk holding it;
//! - `deb_pack` streams the `ar` container from the members' blobs.
//!
//! Every mode, owner, time and order is fixed here by the normalization policy of
//! DESIGN.md; nothing comes from the build machine.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};

use hb_deb::{Compression, TarEntry, TarKind, xz::XzBlockInfo};
use hb_engine::{Action, AnyInput, Ctx, Input, Inputs, JobError, Output, Source, Step, encode_args};
use hb_store::{Digest, EntryKind, Store, Tree, TreeEntry};
use md5::Digest as _;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actions::python::VenvFacts;
use crate::actions::shlibs::ShlibsFacts;

/// Control-file metadata of a package, in the order fields are written.
#[derive(Clone, Debug, Serialize)]
pub struct DebMeta {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub maintainer: String,
    pub pre_depends: Vec<String>,
    pub depends: Vec<String>,
    pub section: String,
    pub priority: String,
    pub homepage: Option<String>,
    pub description: String,
}

impl DebMeta {
    pub fn file_name(&self) -> String {
        // Debian file names drop the epoch.
        let version = self.version.split_once(':').map_or(self.version.as_str(), |(_, v)| v);
        format!("{}_{}_{}.deb", self.package, version, self.architecture)
    }
}

/// The normalization policy applied when packing.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Policy {
    pub compression: Compression,
    /// The one mtime of every tar entry and ar member.
    pub mtime: u64,
}

fn failed(label: &str, what: impl std::fmt::Display) -> JobError {
    JobError::Failed(format!("{label}: {what}"))
}

/// Maps a deb-writer error, keeping store corruption recognizable.
fn deb_err(label: &str, e: hb_deb::DebError) -> JobError {
    match e {
        hb_deb::DebError::Io(io) => match hb_store::StoreError::from_io(&io) {
            Some(_) => JobError::from(io),
            None => failed(label, io),
        },
        other => failed(label, other),
    }
}

/// `deb_layout`: the union of the parts' trees, plus parent directories.
pub struct LayoutJob {
    pub label: String,
    /// The trees to merge, each with what it is called in conflict messages.
    pub parts: Vec<(String, AnyInput)>,
}

impl Action for LayoutJob {
    type Facts = ();
    const KIND: &'static str = "deb_layout";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        Vec::new()
    }
    fn inputs(&self) -> Vec<AnyInput> {
        self.parts.iter().map(|(_, i)| *i).collect()
    }
    fn run(&self, _ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let mut merged: BTreeMap<String, (TreeEntry, usize)> = BTreeMap::new();
        for (i, (_, part)) in self.parts.iter().enumerate() {
            for e in inputs.tree(*part)?.entries() {
                let mut parent = e.path.as_str();
                while let Some((p, _)) = parent.rsplit_once('/') {
                    merged.entry(p.to_string()).or_insert_with(|| (TreeEntry::dir(p), i));
                    parent = p;
                }
                match merged.get(&e.path) {
                    Some((old, j)) if old != e && !(old.kind == EntryKind::Dir && e.kind == EntryKind::Dir) => {
                        return Err(failed(
                            &self.label,
                            format!(
                                "/{} is provided by both {} and {}; each path of a package must come from one target",
                                e.path, self.parts[*j].0, self.parts[i].0
                            ),
                        ));
                    }
                    _ => {
                        merged.insert(e.path.clone(), (e.clone(), i));
                    }
                }
            }
        }
        let tree = Tree::new(merged.into_values().map(|(e, _)| e).collect()).map_err(|e| failed(&self.label, e))?;
        Ok(Output::tree(tree))
    }
}

/// The tar entries of a tree: the root directory first, then the tree in its order.
fn tar_entries(tree: &Tree) -> Vec<(TarEntry, Option<Digest>)> {
    let mut out = vec![(TarEntry { path: String::new(), kind: TarKind::Dir, mode: 0o755 }, None)];
    for e in tree.entries() {
        let (kind, digest) = match &e.kind {
            EntryKind::Dir => (TarKind::Dir, None),
            EntryKind::File { digest, size } => (TarKind::File { size: *size }, Some(*digest)),
            EntryKind::Symlink { target } => (TarKind::Symlink { target: target.clone() }, None),
        };
        out.push((TarEntry { path: e.path.clone(), kind, mode: e.mode }, digest));
    }
    out
}

/// Writes a tar stream of `entries` (contents from the store) into `out`.
fn write_tar(
    store: &Store,
    entries: &[(TarEntry, Option<Digest>)],
    mtime: u64,
    end: bool,
    out: &mut impl Write,
) -> Result<(), JobError> {
    for (e, digest) in entries {
        let written = match digest {
            Some(d) => {
                let mut r = store.open_blob(d)?;
                hb_deb::write_entry(out, e, mtime, &mut r)
            }
            None => hb_deb::write_entry(out, e, mtime, &mut io::empty()),
        };
        written.map_err(|err| deb_err(&e.path, err))?;
    }
    if end {
        hb_deb::write_end(out)?;
    }
    Ok(())
}

/// Compresses `input` (`len` bytes) as one unit (an xz block, a gzip member or a zstd
/// frame) into a new blob; returns its digest, size and, for xz, the block's index
/// record.
fn compress_unit(
    store: &Store,
    compression: Compression,
    input: &mut dyn Read,
    len: u64,
) -> Result<(Digest, u64, Option<XzBlockInfo>), JobError> {
    let mut w = store.blob_writer()?;
    let info = match compression {
        Compression::Xz => Some(hb_deb::xz::compress_block(input, len, &mut w).map_err(|e| deb_err("xz", e))?.0),
        Compression::Gzip => {
            hb_deb::gzip::compress_member(input, &mut w).map_err(|e| deb_err("gzip", e))?;
            None
        }
        Compression::Zstd => {
            hb_deb::zstd_frame::compress(input, &mut w, hb_deb::zstd_frame::DEFAULT_LEVEL)
                .map_err(|e| deb_err("zstd", e))?;
            None
        }
    };
    let (digest, size) = w.finish()?;
    Ok((digest, size, info))
}

/// The bytes a compressed member adds around its units (xz: stream header before,
/// index and footer after).
fn member_frame(compression: Compression, blocks: &[XzBlockInfo]) -> (Vec<u8>, Vec<u8>) {
    match compression {
        Compression::Xz => (hb_deb::xz::stream_header().to_vec(), hb_deb::xz::index_and_footer(blocks)),
        _ => (Vec::new(), Vec::new()),
    }
}

/// What a compressed member's (or chunk's) action tells the pack: for xz, the index
/// record of each of its blocks, in the order of its tree's files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFacts {
    pub xz_blocks: Vec<XzBlockInfo>,
}

impl MemberFacts {
    fn of(info: Option<XzBlockInfo>) -> MemberFacts {
        MemberFacts { xz_blocks: info.into_iter().collect() }
    }
}

/// `deb_control`: the control member.
pub struct ControlJob {
    pub label: String,
    pub meta: DebMeta,
    pub policy: Policy,
    /// Maintainer scripts (name, text), installed with mode 0755.
    pub scripts: Vec<(String, String)>,
    /// The package's file system.
    pub layout: Input<()>,
    /// The virtualenvs in it, whose native code decides the C library dependency
    /// when no `shlibs` is given.
    pub venvs: Vec<Input<VenvFacts>>,
    /// The Depends its ELF objects need (`deb_shlibdeps`), when computed.
    pub shlibs: Option<Input<ShlibsFacts>>,
    /// The target platform (its C library package).
    pub platform: &'static hb_platform::Platform,
}

impl Action for ControlJob {
    type Facts = MemberFacts;
    const KIND: &'static str = "deb_control";
    /// 2: the xz dictionary sized to the member.
    const VERSION: u32 = 2;
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.meta, &self.policy, &self.scripts, self.platform.libc_package))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        std::iter::once(self.layout.any())
            .chain(self.venvs.iter().map(Input::any))
            .chain(self.shlibs.iter().map(Input::any))
            .collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<MemberFacts>, JobError> {
        let layout = inputs.tree(self.layout)?;
        let depends = self.depends(inputs)?;
        let files: Vec<(&str, Digest)> = layout
            .entries()
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { digest, .. } => Some((e.path.as_str(), *digest)),
                _ => None,
            })
            .collect();
        let sums = md5_of(ctx, &files)?;
        let entries: Vec<TarEntry> = tar_entries(layout).into_iter().map(|(e, _)| e).collect();
        let fields = self.fields(hb_deb::installed_size_kib(&entries), &depends);
        let control = hb_deb::render_control(&fields).map_err(|e| failed(&self.label, e))?;
        let md5sums = hb_deb::md5sums(&sums);
        let conffiles: String =
            files.iter().filter(|(p, _)| p.starts_with("etc/")).map(|(p, _)| format!("/{p}\n")).collect();

        let mut members: Vec<(&str, Vec<u8>, u32)> =
            vec![("control", control.into_bytes(), 0o644), ("md5sums", md5sums.into_bytes(), 0o644)];
        if !conffiles.is_empty() {
            members.push(("conffiles", conffiles.into_bytes(), 0o644));
        }
        for (name, text) in &self.scripts {
            members.push((name.as_str(), text.clone().into_bytes(), 0o755));
        }
        members.sort_by(|a, b| a.0.cmp(b.0));
        let mut tar = Vec::new();
        let root = TarEntry { path: String::new(), kind: TarKind::Dir, mode: 0o755 };
        hb_deb::write_entry(&mut tar, &root, self.policy.mtime, &mut io::empty())
            .map_err(|e| failed(&self.label, e))?;
        for (name, bytes, mode) in &members {
            let e = TarEntry { path: name.to_string(), kind: TarKind::File { size: bytes.len() as u64 }, mode: *mode };
            hb_deb::write_entry(&mut tar, &e, self.policy.mtime, &mut bytes.as_slice())
                .map_err(|e| failed(&self.label, e))?;
        }
        hb_deb::write_end(&mut tar)?;
        let (digest, size, info) =
            compress_unit(ctx.store, self.policy.compression, &mut tar.as_slice(), tar.len() as u64)?;
        let name = format!("control.tar.{}", self.policy.compression.extension());
        let tree = Tree::new(vec![TreeEntry::file(name, digest, size, false)]).map_err(|e| failed(&self.label, e))?;
        Ok(Output { tree, facts: MemberFacts::of(info), exports: Vec::new() })
    }
}

impl ControlJob {
    /// The control file's fields, in Debian's usual order.
    fn fields(&self, installed_size: u64, depends: &[String]) -> Vec<(String, String)> {
        let m = &self.meta;
        let mut fields = vec![
            ("Package", m.package.clone()),
            ("Version", m.version.clone()),
            ("Architecture", m.architecture.clone()),
            ("Maintainer", m.maintainer.clone()),
            ("Installed-Size", installed_size.to_string()),
        ];
        if !m.pre_depends.is_empty() {
            fields.push(("Pre-Depends", m.pre_depends.join(", ")));
        }
        if !depends.is_empty() {
            fields.push(("Depends", depends.join(", ")));
        }
        fields.push(("Section", m.section.clone()));
        fields.push(("Priority", m.priority.clone()));
        if let Some(h) = &m.homepage {
            fields.push(("Homepage", h.clone()));
        }
        fields.push(("Description", m.description.clone()));
        fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// `Depends`: the declared relationships, after what the package's compiled code
    /// needs: computed from its ELF files (`deb_shlibdeps`), or without a target root,
    /// the C library as new as the newest glibc its wheels' manylinux tags need.
    fn depends(&self, inputs: &Inputs) -> Result<Vec<String>, JobError> {
        if let Some(s) = &self.shlibs {
            let (_, facts) = inputs.get(s)?;
            let mut depends = facts.depends;
            for d in &self.meta.depends {
                if !depends.contains(d) {
                    depends.push(d.clone());
                }
            }
            return Ok(depends);
        }
        let mut native = false;
        let mut glibc: Option<(u32, u32)> = None;
        for v in &self.venvs {
            let (_, facts) = inputs.get(v)?;
            native |= facts.native_code;
            glibc = glibc.max(facts.required_glibc);
        }
        let mut depends = self.meta.depends.clone();
        if native {
            depends.insert(0, self.platform.libc_depends(glibc));
        }
        Ok(depends)
    }
}

/// The md5 sum of each file, computed in parallel.
fn md5_of(ctx: &Ctx, files: &[(&str, Digest)]) -> Result<Vec<(String, [u8; 16])>, JobError> {
    let store = ctx.store;
    ctx.pool().install(|| {
        files
            .par_iter()
            .map(|(path, d)| {
                let mut r = store.open_blob(d)?;
                let mut h = md5::Md5::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok((path.to_string(), h.finalize().into()))
            })
            .collect()
    })
}

/// Tuning of the data member's chunks (part of the key: changing it changes bytes).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ChunkTuning {
    pub min_bytes: u64,
    pub max_bytes: u64,
    pub cut_one_in: u64,
}

impl Default for ChunkTuning {
    fn default() -> Self {
        let p = hb_deb::ChunkParams::default();
        ChunkTuning { min_bytes: p.min_bytes, max_bytes: p.max_bytes, cut_one_in: p.cut_one_in }
    }
}

/// `deb_data`: the data member as cached, independently compressed chunks.
pub struct DataJob {
    pub label: String,
    pub policy: Policy,
    pub chunks: ChunkTuning,
    /// The package's file system.
    pub layout: Input<()>,
}

/// A tar entry as it enters a chunk's arguments: member path, mode, kind tag (0 dir,
/// 1 file, 2 symlink), size and symlink target. (Content digests are named inputs.)
type ChunkEntry<'a> = (&'a str, u32, u8, u64, Option<&'a str>);

#[derive(Serialize)]
struct ChunkArgs<'a> {
    policy: &'a Policy,
    entries: Vec<ChunkEntry<'a>>,
    last: bool,
}

impl Action for DataJob {
    type Facts = MemberFacts;
    const KIND: &'static str = "deb_data";
    /// 2: chunks also end where the top-level directory changes.
    const VERSION: u32 = 2;
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.policy, &self.chunks))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        vec![self.layout.any()]
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<MemberFacts>, JobError> {
        let entries = tar_entries(inputs.tree(self.layout)?);
        let ranges = match self.policy.compression {
            // dpkg reads only the first zstd frame: the member must be one unit.
            Compression::Zstd => std::iter::once(0..entries.len()).collect(),
            _ => {
                let plain: Vec<TarEntry> = entries.iter().map(|(e, _)| e.clone()).collect();
                let p = hb_deb::ChunkParams {
                    min_bytes: self.chunks.min_bytes,
                    max_bytes: self.chunks.max_bytes,
                    cut_one_in: self.chunks.cut_one_in,
                };
                hb_deb::plan(&plain, &p)
            }
        };
        let count = ranges.len();
        let units: Vec<(Digest, u64, Option<XzBlockInfo>)> = ctx.pool().install(|| {
            ranges
                .par_iter()
                .enumerate()
                .map(|(i, range)| self.chunk(ctx, i, &entries[range.clone()], i + 1 == count))
                .collect::<Result<_, JobError>>()
        })?;
        let mut tree_entries = Vec::new();
        let mut facts = MemberFacts::default();
        for (i, (digest, size, info)) in units.into_iter().enumerate() {
            tree_entries.push(TreeEntry::file(format!("chunk-{i:06}"), digest, size, false));
            facts.xz_blocks.extend(info);
        }
        let tree = Tree::new(tree_entries).map_err(|e| failed(&self.label, e))?;
        Ok(Output { tree, facts, exports: Vec::new() })
    }
}

impl DataJob {
    fn chunk(
        &self,
        ctx: &Ctx,
        i: usize,
        entries: &[(TarEntry, Option<Digest>)],
        last: bool,
    ) -> Result<(Digest, u64, Option<XzBlockInfo>), JobError> {
        let args = ChunkArgs {
            policy: &self.policy,
            entries: entries
                .iter()
                .map(|(e, _)| match &e.kind {
                    TarKind::Dir => (e.path.as_str(), e.mode, 0, 0, None),
                    TarKind::File { size } => (e.path.as_str(), e.mode, 1, *size, None),
                    TarKind::Symlink { target } => (e.path.as_str(), e.mode, 2, 0, Some(target.as_str())),
                })
                .collect(),
            last,
        };
        let name = format!("{} data chunk {i}", self.label);
        // The files' digests are also named inputs, so `hb explain` can name a changed one.
        let inputs: Vec<(String, Digest)> =
            entries.iter().filter_map(|(e, d)| d.map(|d| (format!("/{}", e.path), d))).collect();
        let args = encode_args(&args);
        let bytes_in = entries.iter().map(|(e, _)| if let TarKind::File { size } = e.kind { size } else { 0 }).sum();
        // Version 3: xz dictionaries sized to the chunk.
        let step = Step { name: &name, kind: "deb_data_chunk", version: 3, args: &args, inputs: &inputs, bytes_in };
        let result = ctx.memo::<MemberFacts>(&step, || {
            // The chunk's tar goes through a temporary file so memory stays bounded
            // whatever the size of the files in it.
            let mut tmp = tempfile_in(ctx.store)?;
            {
                let mut w = io::BufWriter::new(&mut tmp);
                write_tar(ctx.store, entries, self.policy.mtime, last, &mut w)?;
                w.flush()?;
            }
            let len = tmp.stream_position()?;
            tmp.rewind()?;
            let (digest, size, info) =
                compress_unit(ctx.store, self.policy.compression, &mut io::BufReader::new(tmp), len)?;
            let tree = Tree::new(vec![TreeEntry::file("chunk", digest, size, false)]).map_err(|e| failed(&name, e))?;
            Ok(Output { tree, facts: MemberFacts::of(info), exports: Vec::new() })
        })?;
        let Some(EntryKind::File { digest, size }) = result.tree.entries().first().map(|e| &e.kind) else {
            return Err(failed(&name, "cached chunk is not a file"));
        };
        Ok((*digest, *size, result.facts.xz_blocks.first().copied()))
    }
}

fn tempfile_in(store: &Store) -> Result<std::fs::File, JobError> {
    let dir = store.tmp_dir();
    tempfile_file(&dir).map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a temporary file in", &dir, e)))
}

fn tempfile_file(dir: &std::path::Path) -> io::Result<std::fs::File> {
    tempfile::tempfile_in(dir)
}

/// `deb_pack`: the `.deb` itself.
pub struct PackJob {
    pub label: String,
    pub file_name: String,
    pub policy: Policy,
    pub control: Input<MemberFacts>,
    pub data: Input<MemberFacts>,
}

/// Reads a sequence of byte buffers and store blobs as one stream, opening blobs lazily.
struct Concat<'a> {
    store: &'a Store,
    parts: std::collections::VecDeque<Part>,
    current: Option<Box<dyn Read + 'a>>,
}

enum Part {
    Bytes(Vec<u8>),
    Blob(Digest),
}

impl Read for Concat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(r) = &mut self.current {
                let n = r.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            match self.parts.pop_front() {
                None => return Ok(0),
                Some(Part::Bytes(b)) => self.current = Some(Box::new(io::Cursor::new(b))),
                Some(Part::Blob(d)) => {
                    let r = self.store.open_blob(&d).map_err(|e| match e {
                        hb_store::StoreError::Fs(f) => f.cause,
                        other => io::Error::other(other.to_string()),
                    })?;
                    self.current = Some(Box::new(r));
                }
            }
        }
    }
}

/// One member's parts and total size: frame bytes around the unit blobs of its tree.
fn member(tree: &Tree, facts: &MemberFacts, compression: Compression) -> (u64, Vec<Part>) {
    let (head, tail) = member_frame(compression, &facts.xz_blocks);
    let mut size = (head.len() + tail.len()) as u64;
    let mut parts = vec![Part::Bytes(head)];
    for e in tree.entries() {
        if let EntryKind::File { digest, size: s } = &e.kind {
            size += s;
            parts.push(Part::Blob(*digest));
        }
    }
    parts.push(Part::Bytes(tail));
    (size, parts)
}

impl Action for PackJob {
    type Facts = ();
    const KIND: &'static str = "deb_pack";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.file_name, &self.policy))
    }
    fn inputs(&self) -> Vec<AnyInput> {
        vec![self.control.any(), self.data.any()]
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let reader = |input: &Input<MemberFacts>| -> Result<_, JobError> {
            let (tree, facts) = inputs.get(input)?;
            let (size, parts) = member(tree, &facts, self.policy.compression);
            Ok((size, Concat { store: ctx.store, parts: parts.into(), current: None }))
        };
        let (control_size, mut control) = reader(&self.control)?;
        let (data_size, mut data) = reader(&self.data)?;
        let w = io::BufWriter::with_capacity(1 << 20, ctx.store.blob_writer()?);
        let w = hb_deb::write_deb(
            w,
            self.policy.mtime,
            self.policy.compression,
            (control_size, &mut control),
            (data_size, &mut data),
        )
        .map_err(|e| deb_err(&self.label, e))?;
        let w = w.into_inner().map_err(|e| failed(&self.label, e.error()))?;
        let (digest, size) = w.finish()?;
        let tree = Tree::new(vec![TreeEntry::file(self.file_name.clone(), digest, size, false)])
            .map_err(|e| failed(&self.label, e))?;
        Ok(Output { tree, facts: (), exports: vec![self.file_name.clone()] })
    }
}
