//! Colour themes for `webb ui`: semantic styles ([`Role`]) loaded from TOML.
//!
//! View code asks a [`Theme`] for the style of a role (a verdict, the
//! selection, a border), never for a colour. Four themes are built in
//! (`builtin/*.toml`); a user theme is a TOML file that `extends` one of them
//! and overrides any of its styles, either given by path (`--theme
//! ./mine.toml`) or placed in the config directory under a built-in's name
//! to change parts of that built-in. [`Theme::without_colour`] honours
//! NO_COLOR and [`Theme::to_16_colours`] fits terminals without 256 colours.

use std::{collections::BTreeMap, path::Path};

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The built-in themes, in the order `webb ui --theme` lists them.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("dark", include_str!("../builtin/dark.toml")),
    ("light", include_str!("../builtin/light.toml")),
    (
        "high-contrast",
        include_str!("../builtin/high-contrast.toml"),
    ),
    ("colour-blind", include_str!("../builtin/colour-blind.toml")),
];

/// The default theme.
pub const DEFAULT: &str = "dark";

/// What a style is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Text,
    Muted,
    Title,
    Border,
    BorderFocus,
    Header,
    Selection,
    Forwarded,
    Dropped,
    Audit,
    Error,
    Redirected,
    ChipOn,
    ChipOff,
    Healthy,
    Warning,
    Critical,
    Key,
}

impl Role {
    pub const ALL: [Role; 18] = [
        Role::Text,
        Role::Muted,
        Role::Title,
        Role::Border,
        Role::BorderFocus,
        Role::Header,
        Role::Selection,
        Role::Forwarded,
        Role::Dropped,
        Role::Audit,
        Role::Error,
        Role::Redirected,
        Role::ChipOn,
        Role::ChipOff,
        Role::Healthy,
        Role::Warning,
        Role::Critical,
        Role::Key,
    ];

    /// The key in a theme file.
    pub fn key(self) -> &'static str {
        match self {
            Role::Text => "text",
            Role::Muted => "muted",
            Role::Title => "title",
            Role::Border => "border",
            Role::BorderFocus => "border_focus",
            Role::Header => "header",
            Role::Selection => "selection",
            Role::Forwarded => "forwarded",
            Role::Dropped => "dropped",
            Role::Audit => "audit",
            Role::Error => "error",
            Role::Redirected => "redirected",
            Role::ChipOn => "chip_on",
            Role::ChipOff => "chip_off",
            Role::Healthy => "healthy",
            Role::Warning => "warning",
            Role::Critical => "critical",
            Role::Key => "key",
        }
    }

    fn index(self) -> usize {
        Role::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A theme: a style per role.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    styles: [Style; Role::ALL.len()],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    /// The built-in this file changes (default: `dark`, or the built-in of
    /// the same name for files in the config directory).
    extends: Option<String>,
    #[serde(default)]
    styles: BTreeMap<String, StyleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    dim: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underlined: bool,
    #[serde(default)]
    reversed: bool,
}

/// A colour: a name, `#rrggbb`, or a 0-255 palette index.
pub fn parse_colour(s: &str) -> Result<Color, Error> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix('#') {
        if hex.len() == 6
            && let Ok(v) = u32::from_str_radix(hex, 16)
        {
            return Ok(Color::Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8));
        }
        return Err(Error(format!("{s:?} is not a #rrggbb colour")));
    }
    if let Ok(i) = s.parse::<u8>() {
        return Ok(Color::Indexed(i));
    }
    Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "reset" | "default" => Color::Reset,
        "black" => Color::Black,
        "red" => Color::Red,
        "green" => Color::Green,
        "yellow" => Color::Yellow,
        "blue" => Color::Blue,
        "magenta" => Color::Magenta,
        "cyan" => Color::Cyan,
        "gray" | "grey" => Color::Gray,
        "dark-gray" | "dark-grey" => Color::DarkGray,
        "light-red" => Color::LightRed,
        "light-green" => Color::LightGreen,
        "light-yellow" => Color::LightYellow,
        "light-blue" => Color::LightBlue,
        "light-magenta" => Color::LightMagenta,
        "light-cyan" => Color::LightCyan,
        "white" => Color::White,
        _ => {
            return Err(Error(format!(
                "{s:?} is not a colour (a name like red or dark-gray, #rrggbb, or 0-255)"
            )));
        }
    })
}

impl StyleSpec {
    fn style(&self, role: &str) -> Result<Style, Error> {
        let colour = |c: &Option<String>| -> Result<Option<Color>, Error> {
            c.as_deref()
                .map(parse_colour)
                .transpose()
                .map_err(|e| Error(format!("{role}: {e}")))
        };
        let mut style = Style::default();
        if let Some(c) = colour(&self.fg)? {
            style = style.fg(c);
        }
        if let Some(c) = colour(&self.bg)? {
            style = style.bg(c);
        }
        for (on, m) in [
            (self.bold, Modifier::BOLD),
            (self.dim, Modifier::DIM),
            (self.italic, Modifier::ITALIC),
            (self.underlined, Modifier::UNDERLINED),
            (self.reversed, Modifier::REVERSED),
        ] {
            if on {
                style = style.add_modifier(m);
            }
        }
        Ok(style)
    }
}

impl Theme {
    /// A built-in theme by name.
    pub fn built_in(name: &str) -> Result<Self, Error> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            Error(format!(
                "no theme {name:?}: the built-in themes are {}",
                names.join(", ")
            ))
        })?;
        let base = Theme {
            name: name.to_owned(),
            styles: [Style::default(); Role::ALL.len()],
        };
        base.apply(text, name)
    }

    /// Parses a theme file over this theme: its styles replace ours.
    fn apply(mut self, text: &str, origin: &str) -> Result<Self, Error> {
        let file: File =
            toml::from_str(text).map_err(|e| Error(format!("theme {origin}: {}", e.message())))?;
        for (key, spec) in &file.styles {
            let role = Role::ALL
                .iter()
                .find(|r| r.key() == key)
                .ok_or_else(|| Error(format!("theme {origin}: no style {key:?}")))?;
            self.styles[role.index()] = spec
                .style(key)
                .map_err(|e| Error(format!("theme {origin}: {e}")))?;
        }
        if let Some(n) = file.name {
            self.name = n;
        }
        Ok(self)
    }

    /// `--theme NAME|PATH`: a path (anything with a `/` or ending in
    /// `.toml`) is a user theme over the built-in it `extends` (default
    /// `dark`). A name is a built-in, changed by `NAME.toml` in `user_dir`
    /// if there is one; a name only found in `user_dir` extends `dark`.
    pub fn load(name_or_path: &str, user_dir: Option<&Path>) -> Result<Self, Error> {
        let is_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
        if is_path {
            return Self::from_file(Path::new(name_or_path), DEFAULT);
        }
        let user = user_dir
            .map(|d| d.join(format!("{name_or_path}.toml")))
            .filter(|p| p.exists());
        let is_built_in = BUILT_IN.iter().any(|(n, _)| *n == name_or_path);
        match (user, is_built_in) {
            (Some(p), true) => Self::from_file(&p, name_or_path),
            (Some(p), false) => Self::from_file(&p, DEFAULT),
            (None, _) => Self::built_in(name_or_path),
        }
    }

    fn from_file(path: &Path, default_base: &str) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error(format!("theme {}: {e}", path.display())))?;
        let origin = path.display().to_string();
        let file: File =
            toml::from_str(&text).map_err(|e| Error(format!("theme {origin}: {}", e.message())))?;
        let base = file.extends.as_deref().unwrap_or(default_base);
        let mut theme = Self::built_in(base).map_err(|e| Error(format!("theme {origin}: {e}")))?;
        theme.name = path
            .file_stem()
            .map_or_else(|| origin.clone(), |s| s.to_string_lossy().into_owned());
        theme.apply(&text, &origin)
    }

    pub fn style(&self, role: Role) -> Style {
        self.styles[role.index()]
    }

    /// The style of a verdict name (`FORWARDED`, `DROPPED`, ...).
    pub fn verdict(&self, verdict: &str) -> Style {
        self.style(match verdict {
            "FORWARDED" => Role::Forwarded,
            "DROPPED" => Role::Dropped,
            "AUDIT" => Role::Audit,
            "ERROR" => Role::Error,
            "REDIRECTED" | "TRACED" | "TRANSLATED" => Role::Redirected,
            _ => Role::Text,
        })
    }

    /// The same theme without colours, for NO_COLOR: modifiers stay, so
    /// drops are still bold and the selection is reversed.
    pub fn without_colour(mut self) -> Self {
        for s in &mut self.styles {
            *s = Style::default().add_modifier(s.add_modifier);
        }
        let sel = Role::Selection.index();
        self.styles[sel] = self.styles[sel].add_modifier(Modifier::REVERSED);
        let chip = Role::ChipOn.index();
        self.styles[chip] = self.styles[chip].add_modifier(Modifier::REVERSED);
        self
    }

    /// The same theme in the 16 basic colours, for terminals without 256.
    pub fn to_16_colours(mut self) -> Self {
        for s in &mut self.styles {
            s.fg = s.fg.map(basic);
            s.bg = s.bg.map(basic);
        }
        self
    }
}

/// The nearest of the 16 basic colours.
fn basic(c: Color) -> Color {
    let (r, g, b) = match c {
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Indexed(i) if i >= 16 => indexed_rgb(i),
        other => return other,
    };
    const PALETTE: [(Color, (u8, u8, u8)); 16] = [
        (Color::Black, (0, 0, 0)),
        (Color::Red, (170, 0, 0)),
        (Color::Green, (0, 170, 0)),
        (Color::Yellow, (170, 85, 0)),
        (Color::Blue, (0, 0, 170)),
        (Color::Magenta, (170, 0, 170)),
        (Color::Cyan, (0, 170, 170)),
        (Color::Gray, (170, 170, 170)),
        (Color::DarkGray, (85, 85, 85)),
        (Color::LightRed, (255, 85, 85)),
        (Color::LightGreen, (85, 255, 85)),
        (Color::LightYellow, (255, 255, 85)),
        (Color::LightBlue, (85, 85, 255)),
        (Color::LightMagenta, (255, 85, 255)),
        (Color::LightCyan, (85, 255, 255)),
        (Color::White, (255, 255, 255)),
    ];
    let d = |(pr, pg, pb): (u8, u8, u8)| {
        let sq = |a: u8, b: u8| (i32::from(a) - i32::from(b)).pow(2);
        sq(r, pr) + sq(g, pg) + sq(b, pb)
    };
    PALETTE
        .iter()
        .min_by_key(|(_, rgb)| d(*rgb))
        .map_or(Color::Reset, |(c, _)| *c)
}

/// The RGB value of a 256-colour palette index (16-255).
fn indexed_rgb(i: u8) -> (u8, u8, u8) {
    if i >= 232 {
        let v = 8 + (i - 232) * 10;
        return (v, v, v);
    }
    let i = i - 16;
    let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
    (level(i / 36), level(i / 6 % 6), level(i % 6))
}

#[cfg(test)]
mod tests;
