//! The wire protocols of remote build caches and executors, generated at build time
//! from the vendored protos in `proto/` (see its README for their origin and licence):
//! REAPI v2 (`build.bazel.remote.execution.v2`: capabilities, CAS, action cache,
//! execution), ByteStream (`google.bytestream`, large blobs), the Remote Workers API
//! (`google.devtools.remoteworkers.v1test2`: the Bots service a worker takes leases
//! from) and the long-running operations and status messages they use. Clients only;
//! hb serves none of these.
//! Nothing here knows about hb: `hb-remote` maps hb's actions and trees onto it.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub mod build {
    pub mod bazel {
        pub mod semver {
            tonic::include_proto!("build.bazel.semver");
        }
        pub mod remote {
            pub mod execution {
                pub mod v2 {
                    tonic::include_proto!("build.bazel.remote.execution.v2");
                }
            }
        }
    }
}

pub mod google {
    pub mod bytestream {
        tonic::include_proto!("google.bytestream");
    }
    pub mod longrunning {
        tonic::include_proto!("google.longrunning");
    }
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
    pub mod api {
        tonic::include_proto!("google.api");
    }
    pub mod devtools {
        pub mod remoteworkers {
            pub mod v1test2 {
                tonic::include_proto!("google.devtools.remoteworkers.v1test2");
            }
        }
    }
}

pub use build::bazel::remote::execution::v2 as re;
pub use google::bytestream as bs;
pub use google::devtools::remoteworkers::v1test2 as bots;
