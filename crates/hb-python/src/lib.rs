//! `hb-python` is hb's native wheel installer. It parses wheel file names and matches
//! their tags against a Debian target (never the build machine), opens and validates
//! wheel archives (paths, RECORD hashes, metadata), and writes the virtualenv that
//! `python3.11 -m venv` plus `pip install` would produce at an install prefix, as a list
//! of tree entries whose file contents go to the caller's content-addressed store. It
//! runs neither pip nor Python, and its output is a pure function of its inputs. It
//! also evaluates environment markers for a target (`markers`) and checks that a venv's
//! distributions meet each other's requirements, as `pip check` does (`requires`).

mod error;
pub mod license;
pub mod markers;
mod record;
pub mod requires;
pub mod tags;
pub mod venv;
pub mod wheel;

#[cfg(test)]
mod testutil;

pub use error::PyError;
pub use tags::{Target, WheelName, normalize};
pub use venv::{Venv, VenvSpec, install};
pub use wheel::{Limits, Wheel};
