//! Reproducibility, made checkable: [`explain`] says why each action of the last build
//! ran (the input digests that changed since the build before, traced back to their
//! root cause), and [`verify`] rebuilds a label from scratch in a throwaway cache and
//! checkout, under chosen variations of the machine, and names the first action whose
//! output differs, with the files that differ. [`profile`] says where a build's time
//! went. [`provenance`] checks a deb against its signed provenance and the locks.

pub mod explain;
pub mod profile;
pub mod provenance;
pub mod verify;

pub use explain::{Explanation, explain};
pub use verify::{SANDBOX_CLOCK_VARIABLE, SANDBOX_CPUS_VARIABLE, Variation, VerifyReport, VerifyRequest, verify};
