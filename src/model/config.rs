//! What the network's shape depends on, and all [`super::Model::new`] receives: the original's
//! `model:` section, the side of the input images and the size of the vocabulary. Every
//! checkpoint's sidecar stores it, so a trained model is rebuilt from its checkpoint alone.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::options::{ModelOptions, Options};

/// The most words a vocabulary may have (its embedding alone is 620 floats a word).
const MAX_VOCABULARY: usize = 2_000_000;

/// The configuration of one AMFMN network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The original's `model:` section (layer sizes, attention type, skip-thoughts variant).
    pub model: ModelOptions,
    /// Side of the square input images (`dataset.image_size`).
    pub image_size: u32,
    /// Words of the vocabulary (ids 1..=vocab_size; 0 pads).
    pub vocab_size: usize,
}

impl ModelConfig {
    /// The network `options` describe for a vocabulary of `vocab_size` words.
    pub fn new(options: &Options, vocab_size: usize) -> ModelConfig {
        ModelConfig { model: options.model.clone(), image_size: options.dataset.image_size, vocab_size }
    }

    /// Width d of the joint space (`model.embed.embed_dim`).
    pub fn embed_dim(&self) -> i64 {
        self.model.embed.embed_dim
    }

    /// Refuses a configuration no network can be built for.
    pub fn validate(&self) -> Result<()> {
        let image_size = self.image_size;
        if !image_size.is_multiple_of(32) || image_size < 32 {
            bail!("dataset.image_size: {image_size} must be a multiple of 32 (the CNN halves it five times)");
        }
        if !(1..=MAX_VOCABULARY).contains(&self.vocab_size) {
            bail!("the vocabulary has {} words; the text encoder takes 1 to {MAX_VOCABULARY}", self.vocab_size);
        }
        if self.embed_dim() < 1 {
            bail!("model.embed.embed_dim: must be positive, got {}", self.embed_dim());
        }
        let multiscale = &self.model.multiscale;
        if multiscale.multiscale_input_channel < 1 || multiscale.multiscale_output_channel < 1 {
            bail!("model.multiscale: channel counts must be positive");
        }
        Ok(())
    }
}
