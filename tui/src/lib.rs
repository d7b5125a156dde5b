//! The `webb` command's parts, as a library so that benchmarks and tests
//! can drive them: the connection (`conn`), Hubble's filters (`filters`),
//! `observe` and its printers, `status`, and the dashboard (`ui`).

pub mod agent_events;
pub mod conn;
pub mod filters;
pub mod observe;
pub mod portforward;
pub mod printer;
pub mod status;
pub mod time;
pub mod ui;
