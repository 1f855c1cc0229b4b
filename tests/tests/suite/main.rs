//! The end-to-end and conformance suites, in one binary so that wasmtime links once.

mod admin;
mod binary;
mod boundary;
mod cache_events;
mod conformance;
mod dashboard;
mod delivery;
mod e2e_embedded;
mod e2e_services;
mod grants;
mod hostile;
mod l1;
mod limits;
mod live;
mod operations;
mod outbound_http;
mod plugins_dir;
mod queue_settings;
mod queue_types;
mod read_through;
mod request_reply;
mod reuse;
mod schedules;
mod status_page;
mod store_plugins;
mod testkit;
