//! Resolved run configs: defaults ← `--config FILE.toml` ← command-line flags.
//!
//! Each trainer has a config struct (serde, `deny_unknown_fields`, `Default`) and a flags struct
//! whose fields are `Option`s, `None` when the flag was not given. [`resolve`] layers the three
//! as TOML tables and deserialises the result, so an unknown key in a file or a wrong type is
//! a one-line error naming the key. The resolved config is what `config.toml` in the run
//! directory holds, every default included.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

fn to_table<T: Serialize>(v: &T, what: &str) -> Result<toml::Table> {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(Error::new(format!("{what} is not a table"))),
        Err(e) => Err(Error::new(format!("{what}: {e}"))),
    }
}

/// Layer `overrides` (flags given, as an `Option`-field struct serialised with
/// `skip_serializing_if = "Option::is_none"`) over the file over `C::default()`.
pub fn resolve<C, O>(file: Option<&Path>, overrides: &O) -> Result<C>
where
    C: Serialize + DeserializeOwned + Default,
    O: Serialize,
{
    let mut table = to_table(&C::default(), "defaults")?;
    if let Some(path) = file {
        let file_table = read_toml(path)?;
        merge(&mut table, file_table);
    }
    merge(&mut table, to_table(overrides, "flags")?);
    let what = file.map(|p| format!("config '{}'", p.display())).unwrap_or_else(|| "config".into());
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| Error::new(format!("{what}: {}", one_line(&e.to_string()))))
}

/// Parse a TOML file into a table, with errors naming the file.
pub fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(format!("config file '{}' not found", path.display())),
        _ => Error::new(format!("reading config '{}': {e}", path.display())),
    })?;
    parse_toml(&text, path)
}

/// Parse TOML text read from `path` (named in errors).
pub fn parse_toml(text: &str, path: &Path) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| Error::new(format!("config '{}' is not valid TOML: {}", path.display(), one_line(&e.to_string()))))
}

fn merge(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// TOML errors come with a source excerpt over several lines; keep the gist on one line.
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')).collect();
    lines.join(": ").replace("::", ":")
}

/// A config whose fields are its own flags (`clap::Args`, each with its default): the values
/// they take when none is given. This is its [`Default`], so that each default is written once,
/// in the field's `#[arg(default_value_t = …)]` (or `skip = …`).
pub fn flag_defaults<C: clap::Args + clap::FromArgMatches>() -> C {
    let cmd = C::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let m = cmd.try_get_matches_from(Vec::<String>::new()).expect("every flag of a config has a default");
    C::from_arg_matches(&m).expect("a config's defaults parse")
}

/// The flags of `cfg` that `m` got from the command line, as a TOML table: what the user set,
/// to layer over the defaults and the `--config` file (the others hold mere defaults).
pub fn given_flags<C: Serialize>(cfg: &C, m: &clap::ArgMatches) -> Result<toml::Table> {
    let mut t = to_table(cfg, "flags")?;
    t.retain(|k, _| m.try_contains_id(k).unwrap_or(false) && m.value_source(k) == Some(clap::parser::ValueSource::CommandLine));
    Ok(t)
}

/// The TOML text of a resolved config.
pub fn to_toml<C: Serialize>(c: &C) -> Result<String> {
    toml::to_string(c).map_err(|e| Error::new(format!("serialising config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        lr: f64,
        batch: usize,
        name: String,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg { lr: 0.1, batch: 10, name: "x".into() }
        }
    }
    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        lr: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        batch: Option<usize>,
    }

    fn file(text: &str, tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("wick-cfg-{tag}-{}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let p = file("lr = 0.5\nbatch = 3\n", "ok");
        let c: Cfg = resolve(Some(&p), &Flags { lr: Some(0.01), batch: None }).unwrap();
        assert_eq!(c, Cfg { lr: 0.01, batch: 3, name: "x".into() });
        let c: Cfg = resolve(None, &Flags::default()).unwrap();
        assert_eq!(c, Cfg::default());
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let p = file("lr = 0.5\nbogus = 1\n", "unknown");
        let e = resolve::<Cfg, _>(Some(&p), &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        assert!(!e.contains('\n'));
        let p = file("lr = = 2\n", "syntax");
        let e = resolve::<Cfg, _>(Some(&p), &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let p = file("batch = \"ten\"\n", "type");
        let e = resolve::<Cfg, _>(Some(&p), &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("batch") || e.contains("invalid type"), "{e}");
        let e = resolve::<Cfg, _>(Some(Path::new("/nonexistent/c.toml")), &Flags::default()).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
    }
}
