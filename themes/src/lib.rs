//! Colour themes for `webb ui`. The dashboard issue fills this crate with
//! serde-loaded TOML themes; until then it only names the built-ins it will ship.

/// The names of the built-in themes, in the order `webb ui --theme` lists them.
pub const BUILT_IN: &[&str] = &["dark", "light", "high-contrast", "colour-blind"];
