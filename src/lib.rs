//! amfmn: the AMFMN cross-modal remote-sensing image-text retrieval model (Yuan et al., IEEE
//! TGRS 2021) on libtorch.
//!
//! The modules follow the pipeline: [`options`] → [`text`] (tokenizer, vocabulary) → [`data`]
//! (precomp files, splits, transforms, loader, synthetic set) → [`model`] (backbone, MVSA, text
//! encoder, attention, fusion) → [`loss`] → [`train`] / [`eval`] (metrics) → [`checkpoint`] /
//! [`logging`]; [`commands`] holds the subcommands of the `amfmn` binary.

pub mod checkpoint;
pub mod commands;
pub mod data;
pub mod device;
pub mod dist;
pub mod encode;
pub mod eval;
pub mod ffi;
pub mod fsutil;
pub mod html;
pub mod locate;
pub mod logging;
pub mod loss;
pub mod model;
pub mod npy;
pub mod optim;
pub mod options;
pub mod pickle;
pub mod profile;
pub mod report;
pub mod rng;
pub mod saliency;
pub mod score;
pub mod search;
pub mod serve;
pub mod synthetic;
pub mod table;
pub mod text;
pub mod train;
