//! Stand-ins for the providers the example plugins call (a mail provider, a payment
//! gateway, a webhook endpoint that verifies Standard Webhooks signatures): the host's
//! own ([`techub_host::stand_ins`], which the demo runs), re-exported for tests. Each
//! is a real HTTP server on loopback with the provider's rules; `start` puts one on a
//! free port, quiet.

pub use techub_host::stand_ins::*;
