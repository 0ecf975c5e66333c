//! The wire contracts of every distlab service.
//!
//! Layout: one module per protobuf package, named like the package (`kv::v1` is `kv.v1`). The
//! `.proto` files live in `proto/` beside this crate and are the source of truth; `build.rs`
//! compiles them with a vendored `protoc`.

pub mod kv {
    pub mod v1 {
        tonic::include_proto!("kv.v1");
    }
}

pub mod cache {
    pub mod v1 {
        tonic::include_proto!("cache.v1");
    }
}

/// Raft's peer RPCs, shared by every service that runs a Raft group.
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("raft.v1");
    }
}

/// Project 3 (Kafka-lite): the controller quorum's and the brokers' APIs.
pub mod log {
    pub mod v1 {
        tonic::include_proto!("log.v1");
    }
}

/// Project 4 (MapReduce-mini): the coordinator's and the workers' shuffle APIs.
pub mod batch {
    pub mod v1 {
        tonic::include_proto!("batch.v1");
    }
}

/// Project 5 (distributed transactions): the bank's client API and two-phase commit.
pub mod bank {
    pub mod v1 {
        tonic::include_proto!("bank.v1");
    }
}

pub mod raftkv {
    pub mod v1 {
        tonic::include_proto!("raftkv.v1");
    }
}

/// A subset of etcd's v3 KV API, for benchmarking Project 2 against etcd (not a distlab
/// service: the benchmark is its only client).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
