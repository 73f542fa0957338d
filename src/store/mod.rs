//! Where host records live.
//!
//! The middleware asks a store for the record of a host key and never holds the map itself,
//! so the records can later live elsewhere (Redis, for quotas shared across processes) without
//! touching the request loop.

mod memory;

pub(crate) use self::memory::MemoryStore;
