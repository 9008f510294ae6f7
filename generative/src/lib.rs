//! wick-generative: autoregressive density models over binary vectors, p(x) = Π_d p(x_d | x_<d),
//! with exact log-likelihood in nats, ancestral sampling and completion.
pub mod fvsbn;
pub mod model;
pub mod train;

pub use fvsbn::Fvsbn;
pub use model::DensityModel;
