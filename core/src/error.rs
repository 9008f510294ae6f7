//! wick's error type: a one-line message meant for the user.
//!
//! Every failure a user can cause (bad flags, bad data files, a corrupt checkpoint,
//! an existing run directory, a diverging loss) becomes an [`Error`] whose `Display`
//! is a single line naming the problem and, where there is one, the fix. The binary
//! prints it on stderr and exits with code 2.

use std::fmt;

/// A user-facing error: one line, no backtrace.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        let msg: String = msg.into();
        // Keep it on one line whatever the source said.
        let msg = msg.split('\n').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
        Error { msg }
    }

    pub fn message(&self) -> &str {
        &self.msg
    }

    /// Prefix the message with where it happened: `"{ctx}: {msg}"`.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error::new(format!("{ctx}: {}", self.msg))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(e.to_string())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        // Candle's errors can carry a multi-line backtrace; keep only the first line.
        let s = e.to_string();
        Error::new(s.lines().next().unwrap_or("tensor error").to_string())
    }
}

/// `.context(..)` for any result whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// Return early with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::new(format!($($arg)*))) };
}

/// Return early with a formatted [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !($cond) { $crate::bail!($($arg)*); } };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = Error::new("first\n  second\n\nthird");
        assert_eq!(e.to_string(), "first; second; third");
        let e = e.context("loading x.csv");
        assert_eq!(e.to_string(), "loading x.csv: first; second; third");
    }
}
