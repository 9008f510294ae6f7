//! wick-pretrain: self-supervised pretraining of image encoders without labels — masked
//! prediction, SimCLR and VICReg — and the linear probe that measures what they learned.
pub mod augment;
pub mod conv;
pub mod dense;
pub mod encoder;
pub mod fused;
pub mod host;
pub mod masked;
pub mod probe;
pub mod simclr;
pub mod vicreg;

pub use encoder::{Encoder, EncoderKind};
pub mod train;
