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

/// The demo option file with `sets` applied (`key=value`), for unit tests.
#[cfg(test)]
pub(crate) fn demo_options(sets: &[&str]) -> crate::options::Options {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    crate::options::Options::parse(include_str!("../../option/demo_AMFMN.yaml"), &sets).unwrap()
}

/// The model of [`demo_options`] with `sets`, for a vocabulary of `vocab` words, its random
/// weights drawn from `seed`, on `device`, for unit tests.
#[cfg(test)]
pub(crate) fn demo_model(sets: &[&str], vocab: usize, device: tch::Device, seed: u64) -> Model {
    Model::new(&ModelConfig::new(&demo_options(sets), vocab), device, seed).unwrap()
}
