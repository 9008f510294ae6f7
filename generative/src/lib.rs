//! wick-generative: autoregressive density models over binary vectors, p(x) = Π_d p(x_d | x_<d),
//! with exact log-likelihood in nats, ancestral sampling and completion.
pub mod fvsbn;
#[cfg(test)]
mod gof;
pub mod made;
pub mod model;
pub mod nade;
pub mod nade_op;
pub mod oanade;
pub mod staircase;
pub mod train;

pub use fvsbn::Fvsbn;
pub use made::Made;
pub use model::DensityModel;
pub use nade::Nade;
pub use oanade::OaNade;
