//! The `webb` command's parts, as a library so that benchmarks and tests
//! can drive them: the connection (`conn`), Hubble's filters (`filters`),
//! `observe` and its printers, `status`, `top`, and the dashboard (`ui`).

pub mod advise;
pub mod agent_events;
pub mod config;
pub mod conn;
pub mod debug_events;
pub mod events;
pub mod filters;
pub mod observe;
pub mod portforward;
pub mod printer;
pub mod status;
pub mod time;
pub mod top;
pub mod ui;
pub mod watch;
pub mod whatif;

/// What `webb version` prints, in the shape of `hubble version`'s line.
pub const VERSION: &str = concat!(
    "webb v",
    env!("CARGO_PKG_VERSION"),
    " compiled with ",
    env!("WEBB_RUSTC_VERSION"),
    " on ",
    env!("WEBB_TARGET"),
);
