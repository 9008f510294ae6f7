//! wick-core: the tensor, optimizer and bookkeeping code every wick trainer stands on.
pub mod error;

pub use error::{Context, Error, Result};
pub mod checkpoint;
pub mod choice;
pub mod params;
pub mod rng;
pub mod config;
pub mod cpu;
pub mod device;
pub mod dist;
pub mod progress;
pub mod run;
pub mod session;
pub mod signal;
pub mod image;
pub mod tb;
pub mod oracle;
pub mod mem;
pub mod data;
pub mod binarize;
pub mod fault;
pub mod linalg;
pub mod loss;
pub mod mask;
pub mod optim;
pub mod schedule;
