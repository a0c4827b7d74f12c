//! Generated gRPC and protobuf types of Cumulus.
//!
//! Every `.proto` file under `proto/proto/` is compiled at build time with `protox` and
//! `tonic-prost-build`; nothing here is written by hand except the module tree.
//!
//! - [`inference`]: the KServe Open Inference Protocol V2 (`GRPCInferenceService`), spoken by the
//!   inference gateway and by `tritonclient`.
//! - [`paramstore::v1`]: the sharded parameter store (`paramstore.v1.ParamStore`).
//!
//! ```
//! use cumulus_proto::inference::ServerLiveRequest;
//! let _req = ServerLiveRequest {};
//! ```

/// The KServe V2 gRPC protocol (package `inference`).
pub mod inference {
    #![allow(missing_docs, clippy::all, unused_qualifications)]
    tonic::include_proto!("inference");
}

/// The parameter store protocol (package `paramstore.v1`).
pub mod paramstore {
    #![allow(missing_docs, clippy::all, unused_qualifications)]
    /// Version 1 of the parameter store protocol.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, unused_qualifications)]
        tonic::include_proto!("paramstore.v1");
    }
}

/// The GPU executor protocol (package `gpu.v1`).
pub mod gpu {
    #![allow(missing_docs, clippy::all, unused_qualifications)]
    /// Version 1 of the GPU executor protocol.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, unused_qualifications)]
        tonic::include_proto!("gpu.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cumulus_descriptor");
