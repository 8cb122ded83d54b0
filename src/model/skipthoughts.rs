//! Pretrained skip-thoughts weights from `model.seq2vec.dir_st` (docs/ARCHITECTURE.md, Model): `dictionary.txt`,
//! `utable.npy` + `uni_skip.npz` (UniSkip variants) or `btable.npy` + `bi_skip.npz` (BiSkip),
//! mapped onto the encoder like the original `skipthoughts` package does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::seq2vec::{Encoder, GruWeights, Seq2Vec, SENTENCE_DIM, WORD_DIM};
use crate::npy::{self, Array};

/// What [`load`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Vocabulary words that took the `UNK` row of the table.
    pub unknown_words: usize,
    pub vocabulary: usize,
    pub dictionary: usize,
}

/// The three files a variant needs, in `dir`.
pub fn files(dir: &Path, encoder: &Encoder) -> [PathBuf; 3] {
    let (table, skip) = match encoder {
        Encoder::BiSkip(..) => ("btable.npy", "bi_skip.npz"),
        _ => ("utable.npy", "uni_skip.npz"),
    };
    [dir.join("dictionary.txt"), dir.join(table), dir.join(skip)]
}

/// Loads the pretrained embedding and GRU into `seq2vec` for the vocabulary `words` (id order,
/// ids from 1). Returns `None` without touching the weights when a file is missing.
pub fn load(seq2vec: &Seq2Vec, dir: &Path, words: &[String]) -> Result<Option<Loaded>> {
    let [dictionary_path, table_path, skip_path] = files(dir, &seq2vec.encoder);
    if ![&dictionary_path, &table_path, &skip_path].iter().all(|p| p.is_file()) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&dictionary_path)
        .with_context(|| format!("cannot read {} as UTF-8 text", dictionary_path.display()))?;
    let dictionary: HashMap<&str, usize> = text.lines().enumerate().map(|(i, w)| (w.trim(), i)).collect();
    let unk = *dictionary
        .get("UNK")
        .with_context(|| format!("{}: no `UNK` line, so unknown words have no vector", dictionary_path.display()))?;
    let rows: Vec<usize> = words.iter().map(|w| dictionary.get(w.as_str()).copied().unwrap_or(unk)).collect();
    let unknown_words = words.iter().filter(|w| !dictionary.contains_key(w.as_str())).count();
    let table = npy::read_rows(&table_path, &rows)?;
    if table.row_len() != WORD_DIM as usize {
        bail!("{}: rows have {} values, expected {WORD_DIM}", table_path.display(), table.row_len());
    }
    let mut embedding = vec![0f32; (words.len() + 1) * WORD_DIM as usize];
    embedding[WORD_DIM as usize..].copy_from_slice(&table.data);
    let params = npy::read_npz(&skip_path)?;
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let array: &Array = params.get(name).with_context(|| format!("{}: no array {name}", skip_path.display()))?;
        if array.shape != shape {
            bail!("{}: {name} has shape {:?}, expected {shape:?}", skip_path.display(), array.shape);
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        Ok(Tensor::from_slice(&array.data).view(dims.as_slice()))
    };
    let (w, h) = (WORD_DIM as usize, SENTENCE_DIM as usize);
    tch::no_grad(|| -> Result<()> {
        let emb = Tensor::from_slice(&embedding).view([words.len() as i64 + 1, WORD_DIM]);
        set(&seq2vec.embedding.weight, &emb)?;
        match &seq2vec.encoder {
            Encoder::BayesianUniSkip(cell) => {
                let big_w = get("encoder_W", &[w, 2 * h])?.tr();
                let big_b = get("encoder_b", &[2 * h])?;
                let big_u = get("encoder_U", &[h, 2 * h])?.tr();
                let hh = h as i64;
                set(&cell.weight_ir.weight, &big_w.narrow(0, 0, hh))?;
                set(&cell.weight_ii.weight, &big_w.narrow(0, hh, hh))?;
                set(&cell.weight_in.weight, &get("encoder_Wx", &[w, h])?.tr())?;
                set(cell.weight_ir.bias.as_ref().expect("bias"), &big_b.narrow(0, 0, hh))?;
                set(cell.weight_ii.bias.as_ref().expect("bias"), &big_b.narrow(0, hh, hh))?;
                set(cell.weight_in.bias.as_ref().expect("bias"), &get("encoder_bx", &[h])?)?;
                set(&cell.weight_hr.weight, &big_u.narrow(0, 0, hh))?;
                set(&cell.weight_hi.weight, &big_u.narrow(0, hh, hh))?;
                set(&cell.weight_hn.weight, &get("encoder_Ux", &[h, h])?.tr())?;
            }
            Encoder::UniSkip(g) | Encoder::DropUniSkip(g) => set_gru(g, &get, "encoder_", w, h)?,
            Encoder::BiSkip(forward, backward) => {
                set_gru(forward, &get, "encoder_", w, h / 2)?;
                set_gru(backward, &get, "encoder_r_", w, h / 2)?;
            }
        }
        Ok(())
    })?;
    Ok(Some(Loaded { unknown_words, vocabulary: words.len(), dictionary: dictionary.len() }))
}

/// Theano GRU arrays (`W` = input weights of [r|z], `U` hidden ones, `Wx`/`Ux` of the candidate)
/// into a PyTorch-layout GRU (gates r, z, n; hidden biases zero).
fn set_gru(
    g: &GruWeights,
    get: &dyn Fn(&str, &[usize]) -> Result<Tensor>,
    prefix: &str,
    w: usize,
    h: usize,
) -> Result<()> {
    let name = |n: &str| format!("{prefix}{n}");
    let weight_ih = Tensor::cat(&[get(&name("W"), &[w, 2 * h])?.tr(), get(&name("Wx"), &[w, h])?.tr()], 0);
    let weight_hh = Tensor::cat(&[get(&name("U"), &[h, 2 * h])?.tr(), get(&name("Ux"), &[h, h])?.tr()], 0);
    let bias_ih = Tensor::cat(&[get(&name("b"), &[2 * h])?, get(&name("bx"), &[h])?], 0);
    set(&g.weight_ih, &weight_ih)?;
    set(&g.weight_hh, &weight_hh)?;
    set(&g.bias_ih, &bias_ih)?;
    set(&g.bias_hh, &g.bias_hh.zeros_like())
}

fn set(var: &Tensor, value: &Tensor) -> Result<()> {
    if var.size() != value.size() {
        bail!("shape {:?} does not fit the variable's {:?}", value.size(), var.size());
    }
    var.shallow_clone().copy_(&value.to_device(var.device()));
    Ok(())
}
