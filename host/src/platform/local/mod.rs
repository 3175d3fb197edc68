//! The local platform: real datastore processes on 127.0.0.x, and a primary endpoint.

pub mod forwarder;
pub mod server;
