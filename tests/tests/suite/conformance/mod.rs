//! One generic body per capability, run against the embedded backend and against the
//! real service. A difference between them is a failure here, or documented in the
//! WIT and asserted.

mod broker;
mod cache;
mod lock;
mod queue_limits;
mod redis_modes;
mod store;
