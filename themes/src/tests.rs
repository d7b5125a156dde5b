use ratatui::style::{Color, Modifier};

use super::*;

#[test]
fn every_built_in_loads_and_sets_every_role() {
    for (name, _) in BUILT_IN {
        let t = Theme::built_in(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.name, *name);
        for role in Role::ALL {
            assert_ne!(
                t.style(role),
                Style::default(),
                "{name} leaves {} unset",
                role.key()
            );
        }
        // Drops never look like forwards.
        assert_ne!(t.verdict("DROPPED"), t.verdict("FORWARDED"), "{name}");
    }
}

#[test]
fn a_user_file_overrides_part_of_a_built_in() {
    let dir = std::env::temp_dir().join(format!("webb-themes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dark.toml"),
        "[styles]\ndropped = { fg = \"#ff0000\", underlined = true }\n",
    )
    .unwrap();
    let t = Theme::load("dark", Some(&dir)).unwrap();
    assert_eq!(t.style(Role::Dropped).fg, Some(Color::Rgb(255, 0, 0)));
    assert!(
        t.style(Role::Dropped)
            .add_modifier
            .contains(Modifier::UNDERLINED)
    );
    // The rest is the built-in's.
    let dark = Theme::built_in("dark").unwrap();
    assert_eq!(t.style(Role::Forwarded), dark.style(Role::Forwarded));

    let path = dir.join("mine.toml");
    std::fs::write(
        &path,
        "extends = \"light\"\n[styles]\nkey = { fg = \"magenta\" }\n",
    )
    .unwrap();
    let t = Theme::load(path.to_str().unwrap(), None).unwrap();
    assert_eq!(t.name, "mine");
    assert_eq!(t.style(Role::Key).fg, Some(Color::Magenta));
    assert_eq!(
        t.style(Role::Text),
        Theme::built_in("light").unwrap().style(Role::Text)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistakes_are_named() {
    assert!(
        Theme::load("solarized", None)
            .unwrap_err()
            .to_string()
            .contains("built-in themes are dark")
    );
    let bad = Theme::built_in("dark")
        .unwrap()
        .apply("[styles]\ndropped = { fg = \"reddish\" }\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("dropped") && bad.contains("reddish"), "{bad}");
    let unknown = Theme::built_in("dark")
        .unwrap()
        .apply("[styles]\nsparkles = { fg = \"red\" }\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("sparkles"), "{unknown}");
}

#[test]
fn no_colour_and_sixteen_colours() {
    let t = Theme::built_in("dark").unwrap().without_colour();
    for role in Role::ALL {
        assert_eq!(t.style(role).fg, None);
        assert_eq!(t.style(role).bg, None);
    }
    assert!(t.style(Role::Dropped).add_modifier.contains(Modifier::BOLD));
    assert!(
        t.style(Role::Selection)
            .add_modifier
            .contains(Modifier::REVERSED)
    );

    let t = Theme::built_in("dark").unwrap().to_16_colours();
    for role in Role::ALL {
        for c in [t.style(role).fg, t.style(role).bg].into_iter().flatten() {
            assert!(
                !matches!(c, Color::Rgb(..) | Color::Indexed(16..)),
                "{}: {c:?}",
                role.key()
            );
        }
    }
    assert_eq!(basic(Color::Rgb(255, 95, 95)), Color::LightRed);
    assert_eq!(basic(Color::Indexed(196)), Color::Red);
}

#[test]
fn colours() {
    assert_eq!(parse_colour("#0a0B0c").unwrap(), Color::Rgb(10, 11, 12));
    assert_eq!(parse_colour("208").unwrap(), Color::Indexed(208));
    assert_eq!(parse_colour("dark_grey").unwrap(), Color::DarkGray);
    assert!(parse_colour("#12345").is_err());
}
