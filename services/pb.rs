//! The code generated from `proto/` by `build.rs`. Never edited by hand: the
//! rest of the crate speaks the domain types of [`crate::model`], converted
//! from and to these in one module per package.

/// `gradebook.registry.v1`: the registry contract.
pub mod registry {
    /// Version 1 of the registry contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("gradebook.registry.v1");
    }
}

/// `gradebook.log.v1`: the log service contract.
pub mod log {
    /// Version 1 of the log service contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("gradebook.log.v1");
    }
}

/// `gradebook.grading.v1`: the grading contract.
pub mod grading {
    /// Version 1 of the grading contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("gradebook.grading.v1");
    }
}

/// `gradebook.supervisor.v1`: the control contract of `gradebook up`.
pub mod supervisor {
    /// Version 1 of the supervisor contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("gradebook.supervisor.v1");
    }
}

/// The encoded descriptor set of every package above, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gradebook_descriptor");
