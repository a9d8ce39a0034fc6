//! Test helpers: builds wheel archives in memory with correct RECORD files, and, on
//! request, deliberately broken ones (tampered bytes, missing rows, symlinks,
//! duplicate names, other wheel versions) to exercise the validation.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::record;

enum Entry {
    File { name: String, bytes: Vec<u8>, mode: u32, recorded: bool },
    Symlink { name: String, target: String },
}

/// Builds a wheel for `{dist}-{version}` with WHEEL, METADATA and a RECORD that matches.
pub struct WheelBuilder {
    dist: String,
    version: String,
    entries: Vec<Entry>,
    wheel_version: String,
    with_wheel: bool,
    with_record: bool,
    /// (path, replacement bytes) written in place of the recorded bytes.
    tampered: Vec<(String, Vec<u8>)>,
    overrides: Vec<(String, Option<String>, Option<String>)>,
    extra_rows: Vec<String>,
    duplicates: Vec<(String, Vec<u8>)>,
    /// `None`: the usual METADATA; `Some(None)`: none; `Some(Some(text))`: this one.
    metadata: Option<Option<String>>,
}

impl WheelBuilder {
    pub fn new(dist: &str, version: &str) -> WheelBuilder {
        WheelBuilder {
            dist: dist.to_string(),
            version: version.to_string(),
            entries: Vec::new(),
            wheel_version: "1.0".to_string(),
            with_wheel: true,
            with_record: true,
            tampered: Vec::new(),
            overrides: Vec::new(),
            extra_rows: Vec::new(),
            duplicates: Vec::new(),
            metadata: None,
        }
    }

    /// Writes `text` as METADATA.
    pub fn metadata(&mut self, text: &str) -> &mut Self {
        self.metadata = Some(Some(text.to_string()));
        self
    }

    /// Leaves METADATA out.
    pub fn no_metadata(&mut self) -> &mut Self {
        self.metadata = Some(None);
        self
    }

    pub fn dist_info(&self) -> String {
        format!("{}-{}.dist-info", self.dist, self.version)
    }

    pub fn file(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.entries.push(Entry::File { name: name.into(), bytes: bytes.to_vec(), mode: 0o644, recorded: true });
        self
    }

    pub fn executable(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.entries.push(Entry::File { name: name.into(), bytes: bytes.to_vec(), mode: 0o755, recorded: true });
        self
    }

    pub fn unrecorded(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.entries.push(Entry::File { name: name.into(), bytes: bytes.to_vec(), mode: 0o644, recorded: false });
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entries.push(Entry::Symlink { name: name.into(), target: target.into() });
        self
    }

    /// Records the bytes given to `file` but stores `bytes` in the archive.
    pub fn tamper(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.tampered.push((name.into(), bytes.to_vec()));
        self
    }

    pub fn record_override(&mut self, name: &str, hash: Option<&str>, size: Option<&str>) -> &mut Self {
        self.overrides.push((name.into(), hash.map(str::to_string), size.map(str::to_string)));
        self
    }

    pub fn extra_record_row(&mut self, row: &str) -> &mut Self {
        self.extra_rows.push(row.into());
        self
    }

    /// Adds a second archive entry named `name` (the zip writer refuses duplicates, so
    /// the name is patched into the bytes afterwards).
    pub fn duplicate(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.duplicates.push((name.into(), bytes.to_vec()));
        self
    }

    pub fn wheel_version(&mut self, v: &str) -> &mut Self {
        self.wheel_version = v.into();
        self
    }

    pub fn no_wheel_file(&mut self) -> &mut Self {
        self.with_wheel = false;
        self
    }

    pub fn no_record(&mut self) -> &mut Self {
        self.with_record = false;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let di = self.dist_info();
        let mut files: Vec<(String, Vec<u8>, u32, bool)> = Vec::new();
        let default = format!("Metadata-Version: 2.1\nName: {}\nVersion: {}\n", self.dist, self.version);
        if let Some(text) = self.metadata.clone().unwrap_or(Some(default)) {
            files.push((format!("{di}/METADATA"), text.into_bytes(), 0o644, true));
        }
        if self.with_wheel {
            let text = format!(
                "Wheel-Version: {}\nGenerator: hb-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                self.wheel_version
            );
            files.push((format!("{di}/WHEEL"), text.into_bytes(), 0o644, true));
        }
        let mut symlinks = Vec::new();
        for e in &self.entries {
            match e {
                Entry::File { name, bytes, mode, recorded } => {
                    files.push((name.clone(), bytes.clone(), *mode, *recorded))
                }
                Entry::Symlink { name, target } => symlinks.push((name.clone(), target.clone())),
            }
        }
        let mut rows = Vec::new();
        for (name, bytes, _, recorded) in &files {
            if !recorded {
                continue;
            }
            let mut row =
                record::Row { path: name.clone(), hash: record::hash_of(bytes), size: bytes.len().to_string() };
            for (n, h, s) in &self.overrides {
                if n == name {
                    if let Some(h) = h {
                        row.hash = h.clone();
                    }
                    if let Some(s) = s {
                        row.size = s.clone();
                    }
                }
            }
            rows.push(row);
        }
        for (name, target) in &symlinks {
            rows.push(record::Row {
                path: name.clone(),
                hash: record::hash_of(target.as_bytes()),
                size: target.len().to_string(),
            });
        }
        rows.push(record::Row { path: format!("{di}/RECORD"), hash: String::new(), size: String::new() });
        let mut record_text = record::render(&rows);
        for extra in &self.extra_rows {
            record_text.push_str(extra);
            record_text.push('\n');
        }

        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let opts = |mode: u32| {
            SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(mode)
        };
        for (name, bytes, mode, _) in &files {
            let bytes = self.tampered.iter().find(|(n, _)| n == name).map_or(bytes, |(_, b)| b);
            zip.start_file(name.as_str(), opts(*mode)).unwrap();
            zip.write_all(bytes).unwrap();
        }
        for (name, target) in &symlinks {
            zip.add_symlink(name.as_str(), target.as_str(), opts(0o777)).unwrap();
        }
        // Placeholder names of the same length, patched to the real name below.
        let mut patches = Vec::new();
        for (i, (name, bytes)) in self.duplicates.iter().enumerate() {
            let mut placeholder = name.clone().into_bytes();
            let last = placeholder.len() - 1;
            placeholder[last] = b'#' - i as u8;
            let placeholder = String::from_utf8(placeholder).unwrap();
            zip.start_file(placeholder.as_str(), opts(0o644).compression_method(CompressionMethod::Stored)).unwrap();
            zip.write_all(bytes).unwrap();
            patches.push((placeholder, name.clone()));
        }
        if self.with_record {
            zip.start_file(format!("{di}/RECORD"), opts(0o644)).unwrap();
            zip.write_all(record_text.as_bytes()).unwrap();
        }
        let mut out = zip.finish().unwrap().into_inner();
        for (from, to) in patches {
            let (from, to) = (from.as_bytes(), to.as_bytes());
            let mut i = 0;
            while i + from.len() <= out.len() {
                if &out[i..i + from.len()] == from {
                    out[i..i + from.len()].copy_from_slice(to);
                    i += from.len();
                } else {
                    i += 1;
                }
            }
        }
        out
    }
}

/// The `demo_pkg` wheel used by the install tests: a package with a `__pycache__` to
/// skip, an executable data file, console and GUI scripts, `.data/` scripts (one with
/// `#!python -u`), headers, data and purelib files.
pub fn pure_wheel() -> (String, Vec<u8>) {
    let mut b = WheelBuilder::new("demo_pkg", "1.0");
    b.file(
        "demo_pkg/__init__.py",
        b"import sys\n\ndef main():\n    print('hello from demo', sys.argv[1:])\n\n\
          class App:\n    @staticmethod\n    def run():\n        print('app run')\n",
    );
    b.file("demo_pkg/gui.py", b"def start():\n    print('gui')\n");
    b.file("demo_pkg/__pycache__/__init__.cpython-311.pyc", b"\x00\x01junk");
    b.file("demo_pkg/stale.pyc", b"\x00\x01junk");
    b.executable("demo_pkg/tool.sh", b"#!/bin/sh\necho tool\n");
    b.file(
        "demo_pkg-1.0.dist-info/entry_points.txt",
        b"[console_scripts]\ndemo = demo_pkg:main\ndemo-app = demo_pkg:App.run [extra]\n\n\
          [gui_scripts]\ndemo-gui = demo_pkg.gui:start\n\n[other.group]\nignored = not valid at all\n",
    );
    b.file("demo_pkg-1.0.data/scripts/demo-script", b"#!python -u\nimport demo_pkg\nprint('script ok')\n");
    b.file("demo_pkg-1.0.data/scripts/plain.sh", b"#!/bin/sh\necho plain\n");
    b.file("demo_pkg-1.0.data/data/share/demo/x.txt", b"data file\n");
    b.file("demo_pkg-1.0.data/headers/demo.h", b"#define DEMO 1\n");
    b.file("demo_pkg-1.0.data/purelib/demo_extra.py", b"EXTRA = True\n");
    ("demo_pkg-1.0-py3-none-any.whl".to_string(), b.build())
}
