//! Reading what an ELF object needs from the system: its `DT_NEEDED` libraries, its own
//! `DT_SONAME`, and its undefined dynamic symbols with the version each requires
//! (`GLIBC_2.14`), through the `object` crate. A file that is not ELF is `None`; a
//! damaged one is an error, never a panic.

use object::read::elf::{Dyn, FileHeader, Sym};
use object::{Endianness, elf};

use crate::ShlibsError;

/// What an ELF object needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfObject {
    pub soname: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// Undefined dynamic symbols as `name@VERSION` (`name@Base` when unversioned).
    pub undefined: Vec<String>,
}

/// Whether `bytes` start like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// The object in `bytes`, or `None` when it is not ELF.
pub fn read(path: &str, bytes: &[u8]) -> Result<Option<ElfObject>, ShlibsError> {
    if !is_elf(bytes) {
        return Ok(None);
    }
    let bad = |e: object::read::Error| ShlibsError::Elf { path: path.to_string(), why: e.to_string() };
    match object::FileKind::parse(bytes).map_err(bad)? {
        object::FileKind::Elf32 => parse::<elf::FileHeader32<Endianness>>(bytes).map(Some).map_err(bad),
        object::FileKind::Elf64 => parse::<elf::FileHeader64<Endianness>>(bytes).map(Some).map_err(bad),
        _ => Ok(None),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> object::read::Result<ElfObject> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let mut out = ElfObject::default();
    if let Some((entries, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in entries {
            let tag = d.tag32(endian);
            if tag == Some(elf::DT_NULL) {
                break;
            }
            if !d.is_string(endian) {
                continue;
            }
            let value = text(d.string(endian, strings)?);
            match tag {
                Some(elf::DT_NEEDED) => out.needed.push(value),
                Some(elf::DT_SONAME) => out.soname = Some(value),
                _ => {}
            }
        }
    }
    let symbols = sections.symbols(endian, data, elf::SHT_DYNSYM)?;
    let versions = sections.versions(endian, data)?;
    for (i, sym) in symbols.iter().enumerate().skip(1) {
        if sym.st_shndx(endian) != elf::SHN_UNDEF {
            continue;
        }
        let name = text(sym.name(endian, symbols.strings())?);
        if name.is_empty() {
            continue;
        }
        let version = match &versions {
            Some(v) => v.version(v.version_index(endian, object::SymbolIndex(i)))?.map(|ver| text(ver.name())),
            None => None,
        };
        out.undefined.push(format!("{name}@{}", version.unwrap_or_else(|| "Base".to_string())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_needs_the_c_library_with_versioned_symbols() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let obj = read("self", &exe).unwrap().expect("an ELF file");
        assert!(obj.needed.iter().any(|n| n.starts_with("libc.so")), "{:?}", obj.needed);
        assert!(
            obj.undefined.iter().any(|s| s.contains("@GLIBC_")),
            "{:?}",
            &obj.undefined[..obj.undefined.len().min(10)]
        );
        assert_eq!(read("text", b"#!/bin/sh\n").unwrap(), None);
    }

    proptest::proptest! {
        #[test]
        fn damaged_elf_files_are_errors_not_panics(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
            bytes.extend(tail);
            let _ = read("x", &bytes);
        }

        #[test]
        fn a_real_object_cut_anywhere_is_an_error_not_a_panic(cut in 0usize..100_000) {
            static EXE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let exe = EXE.get_or_init(|| std::fs::read("/proc/self/exe").unwrap());
            let _ = read("x", &exe[..cut.min(exe.len())]);
        }
    }
}
