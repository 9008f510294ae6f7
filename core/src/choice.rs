//! Closed sets of values (an algorithm, a visit rule, a start distribution, …) as enums,
//! declared once with each value's name and one-line description by [`choice!`](crate::choice!).
//! The same declaration parses flags (clap `ValueEnum`: `--help` lists the values with their
//! descriptions), config files and resumed `config.toml`s (serde: an unknown value is a one-line
//! error naming the valid ones), and lists itself (`wick list`). No string compare, no `_ =>`
//! fallback: a `match` on the enum is checked for every value by the compiler.

pub use clap;

/// Declare a closed set of values:
///
/// ```
/// wick_core::choice! {
///     /// Which returns a sample average takes.
///     pub enum Visit("visit rule") {
///         /// Average only the return following the first visit in an episode.
///         First = "first",
///         /// Average the return following every visit.
///         Every = "every",
///     }
/// }
/// assert_eq!("every".parse::<Visit>().unwrap(), Visit::Every);
/// assert_eq!("frist".parse::<Visit>().unwrap_err().to_string(), "unknown visit rule 'frist': expected first or every");
/// assert_eq!(Visit::First.about(), "Average only the return following the first visit in an episode.");
/// ```
///
/// Each value takes exactly one line of doc comment (its description). The caller's crate
/// needs `serde` with `derive`.
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( #[doc = $about:literal] $var:ident = $s:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( #[doc = $about] #[serde(rename = $s)] $var ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The name flags and config files use.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            /// One line on what this value is.
            pub fn about(self) -> &'static str {
                match self { $($name::$var => $about.trim()),+ }
            }

            /// The valid names as prose: `a, b or c`.
            pub fn expected() -> String {
                let names: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => names.join(""),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<$name> {
                $name::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    $crate::Error::new(format!("unknown {} '{s}': expected {}", $what, $name::expected()))
                })
            }
        }

        impl $crate::choice::clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                $name::ALL
            }
            fn to_possible_value(&self) -> Option<$crate::choice::clap::builder::PossibleValue> {
                Some($crate::choice::clap::builder::PossibleValue::new(self.name()).help(self.about()))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::choice! {
        /// A test set.
        enum Fruit("fruit") {
            /// Red.
            Apple = "apple",
            /// Yellow.
            Banana = "banana",
            /// Orange.
            Orange = "orange-fruit",
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        fruit: Fruit,
    }

    #[test]
    fn parses_lists_and_refuses_by_name() {
        assert_eq!("orange-fruit".parse::<Fruit>().unwrap(), Fruit::Orange);
        assert_eq!(Fruit::expected(), "apple, banana or orange-fruit");
        assert_eq!("pear".parse::<Fruit>().unwrap_err().to_string(), "unknown fruit 'pear': expected apple, banana or orange-fruit");
        assert_eq!(Fruit::Banana.about(), "Yellow.");
        assert_eq!(Fruit::Orange.to_string(), "orange-fruit");
        // A config file or a resumed config.toml: serde names the valid values.
        let e = toml::from_str::<Cfg>("fruit = \"pear\"").unwrap_err().to_string();
        assert!(e.contains("pear") && e.contains("apple") && e.contains("orange-fruit"), "{e}");
        assert_eq!(toml::to_string(&Cfg2 { fruit: Fruit::Orange }).unwrap(), "fruit = \"orange-fruit\"\n");
        use clap::ValueEnum;
        assert_eq!(Fruit::value_variants().len(), 3);
        assert_eq!(Fruit::from_str("banana", false).unwrap(), Fruit::Banana);
    }

    #[derive(serde::Serialize)]
    struct Cfg2 {
        fruit: Fruit,
    }
}
