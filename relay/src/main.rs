//! webb-relay: merges the flow streams of every node agent into one
//! cluster-wide Observer API on port 4245.
//!
//! The relay is built by the relay issue; this binary exists so the workspace
//! and its packaging are complete, and says plainly that it cannot serve yet.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "webb-relay: not built yet (see the relay issue). Point clients at a node agent \
         directly instead: webb-agent serves the same Observer API on port {}.",
        webb_proto::DEFAULT_AGENT_PORT
    );
    ExitCode::from(2)
}
