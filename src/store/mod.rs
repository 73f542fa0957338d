//! Where host records live.
//!
//! The middleware asks a store for the record of a host key and never holds the map itself,
//! so the records can later live elsewhere (Redis, for quotas shared across processes) without
//! touching the request loop. With feature `redis`, [`RedisStore`] shares the pacing schedules
//! and closures of every scope across processes.

mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

pub(crate) use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::{Fallback, RedisStore, RedisStoreError};
