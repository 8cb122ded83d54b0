//! The whole AMFMN network: images → Fv, captions → t, pairs → cosine scores.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tch::nn::{self, VarStore};
use tch::{Device, Tensor};

use super::attention::{cosine, CrossAttention};
use super::backbone::ExtractFeature;
use super::config::ModelConfig;
use super::fusion::VgmfGate;
use super::mvsa::{Mvsa, MvsaMaps};
use super::pass::Pass;
use super::text_encoder::TextFeature;
use super::training::Training;

/// The modules, named like the original's attributes (and so its checkpoint keys).
#[derive(Debug)]
pub struct Amfmn {
    pub extract_feature: ExtractFeature,
    pub mvsa: Mvsa,
    pub text_feature: TextFeature,
    pub cross_attention_s: CrossAttention,
    pub vgmf_gate: VgmfGate,
}

/// Scores `[B_img, B_txt]` in each retrieval mode.
#[derive(Debug)]
pub struct ModeScores {
    pub sentence: Tensor,
    pub keywords: Tensor,
    pub fused: Tensor,
}

/// The key prefixes of the layers that score an image code against a text code (the
/// visual-guided attention and the fusion gate); the encoders are everything else.
pub const SCORING_HEAD: [&str; 2] = ["cross_attention_s.", "vgmf_gate."];

/// An AMFMN network with its variables.
pub struct Model {
    pub vs: VarStore,
    pub net: Amfmn,
    /// What the network was built from.
    config: ModelConfig,
    /// Images go through the CNN in channels-last layout (a runtime choice: [`Model::with_channels_last`]).
    channels_last: bool,
}

impl Amfmn {
    /// Builds the modules of `config` under `vs`.
    pub fn new(vs: &nn::Path, config: &ModelConfig) -> Result<Amfmn> {
        config.validate()?;
        let (m, d) = (&config.model, config.embed_dim());
        Ok(Amfmn {
            extract_feature: ExtractFeature::new(vs / "extract_feature", d),
            mvsa: Mvsa::new(vs / "mvsa", &m.multiscale, d, config.image_size as i64),
            text_feature: TextFeature::new(vs / "text_feature", &m.seq2vec, config.vocab_size as i64, d),
            cross_attention_s: CrossAttention::new(vs / "cross_attention_s", m.cross_attention.att_type, d),
            vgmf_gate: VgmfGate::new(vs / "vgmf_gate", d),
        })
    }

    /// Images `[B, 3, S, S]` → Fv `[B, d]`.
    pub fn encode_images(&self, images: &Tensor, pass: Pass) -> Tensor {
        let f = self.extract_feature.forward(images, pass);
        self.mvsa.forward(&f.lower, &f.higher, &f.global, pass)
    }

    /// Images `[B, 3, S, S]` → Fv with MVSA's spatial maps (evaluation mode).
    pub fn encode_images_with_maps(&self, images: &Tensor) -> MvsaMaps {
        let f = self.extract_feature.forward(images, Pass::EVAL);
        self.mvsa.forward_with_maps(&f.lower, &f.higher, &f.global, Pass::EVAL)
    }

    /// Token ids `[B, L]` and lengths `[B]` → t `[B, d]`, in evaluation mode.
    pub fn encode_texts(&self, ids: &Tensor, lengths: &Tensor) -> Tensor {
        self.text_feature.forward(ids, lengths, Pass::EVAL).evaluated()
    }

    /// [`Amfmn::encode_texts`] in any pass; a training pass defers gradients ([`Training`]).
    pub fn encode_texts_with(&self, ids: &Tensor, lengths: &Tensor, pass: Pass) -> Training<Tensor> {
        self.text_feature.forward(ids, lengths, pass)
    }

    /// Scores of every image against every caption of a batch: `[B_img, B_txt]`.
    pub fn forward(&self, images: &Tensor, ids: &Tensor, lengths: &Tensor, pass: Pass) -> Training<Tensor> {
        let visual = self.encode_images(images, pass);
        let text = self.encode_texts_with(ids, lengths, pass);
        text.map(|text| self.cross_attention_s.scores(&visual, &text, pass))
    }

    /// Scores of images `[Bv, d]` against texts given by their sentence and keyword codes
    /// (`[Bt, d]` each) in the three retrieval modes: by sentence, by keywords, and by both
    /// fused through VGMF (`F = vgmf(T_sentence, T_keywords)`, score `cos(Fv, F)`).
    pub fn mode_scores(&self, visual: &Tensor, sentence: &Tensor, keywords: &Tensor, pass: Pass) -> ModeScores {
        let by_sentence = self.cross_attention_s.attended(visual, sentence, pass);
        let by_keywords = self.cross_attention_s.attended(visual, keywords, pass);
        let fused = self.vgmf_gate.forward(&by_sentence, &by_keywords, pass);
        ModeScores {
            sentence: cosine(visual, &by_sentence),
            keywords: cosine(visual, &by_keywords),
            fused: cosine(visual, &fused),
        }
    }

    /// A training or validation batch with keywords: captions and keywords go through the text
    /// encoder together; returns the `[B, B]` scores of the three modes.
    pub fn forward_with_keywords(
        &self,
        images: &Tensor,
        captions: (&Tensor, &Tensor),
        keywords: (&Tensor, &Tensor),
        pass: Pass,
    ) -> Training<ModeScores> {
        let visual = self.encode_images(images, pass);
        let texts = self.encode_sentences_and_keywords(captions, keywords, pass);
        texts.map(|(sentence, keywords)| self.mode_scores(&visual, &sentence, &keywords, pass))
    }

    /// Captions and the keywords of their images (`([B, L] ids, [B] lengths)` each) → their
    /// codes `([B, d], [B, d])`, through the text encoder together.
    pub fn encode_sentences_and_keywords(
        &self,
        captions: (&Tensor, &Tensor),
        keywords: (&Tensor, &Tensor),
        pass: Pass,
    ) -> Training<(Tensor, Tensor)> {
        let b = captions.0.size()[0];
        let width = captions.0.size()[1].max(keywords.0.size()[1]);
        let pad = |ids: &Tensor| ids.constant_pad_nd([0, width - ids.size()[1]]);
        let ids = Tensor::cat(&[pad(captions.0), pad(keywords.0)], 0);
        let lengths = Tensor::cat(&[captions.1, keywords.1], 0);
        self.encode_texts_with(&ids, &lengths, pass).map(|text| (text.narrow(0, 0, b), text.narrow(0, b, b)))
    }
}

impl Model {
    /// A freshly initialised network of `config` on `device`; `seed` fixes the initial weights.
    /// Its CNN runs in the layout the device is fastest at in fp32 (channels-last on the CPU,
    /// NCHW on CUDA); [`Model::with_channels_last`] chooses another.
    pub fn new(config: &ModelConfig, device: Device, seed: u64) -> Result<Model> {
        tch::manual_seed(seed as i64);
        let vs = VarStore::new(device);
        let net = Amfmn::new(&vs.root(), config)?;
        let model = Model { vs, net, config: config.clone(), channels_last: false };
        Ok(model.with_channels_last(device == Device::Cpu))
    }

    /// The model with its CNN's weights and inputs in channels-last layout (`true`) or NCHW;
    /// the values are the same either way.
    pub fn with_channels_last(mut self, on: bool) -> Model {
        if on != self.channels_last {
            self.convert_conv_weights(on);
            self.channels_last = on;
        }
        self
    }

    /// What the network was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Whether the CNN runs in channels-last layout.
    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Side of the square images the model was built for (`dataset.image_size`).
    pub fn image_size(&self) -> u32 {
        self.config.image_size
    }

    /// Width d of the joint space (`model.embed.embed_dim`).
    pub fn embed_dim(&self) -> i64 {
        self.config.embed_dim()
    }

    /// Moves 4-d weights to channels-last strides (`on`) or contiguous NCHW (same shape and values).
    fn convert_conv_weights(&self, on: bool) {
        tch::no_grad(|| {
            for (_, mut var) in self.vs.variables() {
                if var.dim() == 4 {
                    let moved = if on { to_channels_last(&var) } else { var.contiguous() };
                    var.set_data(&moved);
                }
            }
        });
    }

    /// Puts a batch of images on the model's device, in the layout its CNN expects; a batch in
    /// pinned memory is copied to a GPU without blocking.
    pub fn prepare_images(&self, images: &Tensor) -> Tensor {
        let device = self.device();
        let pinned = device.is_cuda() && images.device() == Device::Cpu && images.is_pinned(device);
        let images = images.to_device_(device, images.kind(), pinned, false);
        if self.channels_last {
            to_channels_last(&images)
        } else {
            images
        }
    }

    /// Every variable (parameters and buffers) by checkpoint key, as contiguous CPU tensors.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        tch::no_grad(|| {
            self.vs.variables().into_iter().map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous())).collect()
        })
    }

    /// Copies `tensors` into the variables; every variable must be present with its shape.
    /// Extra keys are refused too, so a checkpoint of another configuration is not half-loaded.
    pub fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.load_state_dict_except(tensors, &[])
    }

    /// Like [`Model::load_state_dict`], except that variables under the key prefixes
    /// `optional` may be absent (they keep their values): SLM's reduced AMFMN has no
    /// [`SCORING_HEAD`].
    pub fn load_state_dict_except(&mut self, tensors: &BTreeMap<String, Tensor>, optional: &[&str]) -> Result<()> {
        let variables = self.vs.variables();
        let required = |k: &String| !optional.iter().any(|p| k.starts_with(p));
        let missing: Vec<&String> = variables.keys().filter(|k| required(k) && !tensors.contains_key(*k)).collect();
        if !missing.is_empty() && missing.iter().all(|k| SCORING_HEAD.iter().any(|p| k.starts_with(p))) {
            bail!(
                "it has no visual-guided attention or fusion weights ({} keys, first: {}), like SLM's reduced AMFMN: \
                 score it by plain cosine (locate --score plain)",
                missing.len(),
                missing.iter().min().map_or("", |k| k.as_str())
            );
        }
        if !missing.is_empty() {
            let mut missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            missing.sort_unstable();
            bail!("{} keys are missing (first: {}); was it saved with other model options?", missing.len(), missing[0]);
        }
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !variables.contains_key(*k)).collect();
        extra.sort_unstable();
        if let Some(first) = extra.first() {
            bail!(
                "{} keys are not in this model (first: {first}); was it saved with other model options (att_type, seq2vec.type)?",
                extra.len()
            );
        }
        tch::no_grad(|| {
            for (key, mut var) in variables {
                let Some(src) = tensors.get(&key) else { continue };
                if src.size() != var.size() {
                    bail!(
                        "{key}: shape {:?} in the file, {:?} in the model (check the vocabulary and model options)",
                        src.size(),
                        var.size()
                    );
                }
                var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
            }
            Ok(())
        })
    }

    /// Number of parameter values (trainable and frozen, buffers excluded).
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .variables()
            .iter()
            .filter(|(k, _)| {
                !(k.ends_with("running_mean") || k.ends_with("running_var") || k.ends_with("num_batches_tracked"))
            })
            .map(|(_, v)| v.numel() as i64)
            .sum()
    }

    /// Trainable variables by key (what the optimizer updates).
    pub fn trainable(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect()
    }
}

/// The same 4-d tensor with channels-last (NHWC) strides.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
