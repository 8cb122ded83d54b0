//! The AMFMN network (docs/ARCHITECTURE.md, Model), one module per part: ResNet-18 backbone and multiscale features,
//! MVSA, the skip-thoughts text encoder, visual-guided attention, VGMF fusion.

pub mod amfmn;
pub mod amp;
pub mod attention;
pub mod backbone;
pub mod config;
mod fused_gru;
pub mod fusion;
pub mod layers;
pub mod mvsa;
pub mod packed;
pub mod pass;
pub mod resnet;
pub mod seq2vec;
pub mod skipthoughts;
pub mod text_encoder;
mod training;

pub use amfmn::{Amfmn, Model, SCORING_HEAD};
pub use config::ModelConfig;
pub use pass::Pass;
pub use training::{add_to_gradient, Training};
