//! How a forward pass runs: in training or in evaluation mode, and in which precision. Every
//! forward takes it as an argument; nothing else decides how a layer computes.

use tch::Kind;

/// The mode and precision of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Training mode: batch norm normalises by the batch's own statistics and updates its
    /// running ones, dropout is on, and the text encoder defers its hidden-side weight gradients
    /// ([`super::Training`]).
    pub train: bool,
    /// The 16-bit kind of `optim.amp` (ResNet-18 computes in it throughout; other convolutions,
    /// linear layers and the GRU's products round their operands to it and return fp32; the
    /// GRU's state and gates, cosines and loss stay fp32: [`super::amp`]), `None` for fp32
    /// throughout.
    pub precision: Option<Kind>,
}

impl Pass {
    /// Evaluation mode in fp32.
    pub const EVAL: Pass = Pass { train: false, precision: None };

    /// Training mode in `precision`.
    pub fn training(precision: Option<Kind>) -> Pass {
        Pass { train: true, precision }
    }
}
