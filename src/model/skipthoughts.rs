//! Pretrained skip-thoughts weights from `model.seq2vec.dir_st` (docs/ARCHITECTURE.md, Model): `dictionary.txt`,
//! `utable.npy` + `uni_skip.npz` (UniSkip variants) or `btable.npy` + `bi_skip.npz` (BiSkip),
//! mapped onto the encoder like the original `skipthoughts` package does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::seq2vec::{Encoder, GruWeights, Seq2Vec, SENTENCE_DIM, WORD_DIM};
use crate::npy::{self, Array};
use crate::options::Seq2VecType;

/// What [`load`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Vocabulary words that took the `UNK` row of the table.
    pub unknown_words: usize,
    pub vocabulary: usize,
    pub dictionary: usize,
}

/// The three files a variant needs, in `dir`.
pub fn files(dir: &Path, kind: Seq2VecType) -> [PathBuf; 3] {
    let (table, skip) = match kind {
        Seq2VecType::BiSkip => ("btable.npy", "bi_skip.npz"),
        _ => ("utable.npy", "uni_skip.npz"),
    };
    [dir.join("dictionary.txt"), dir.join(table), dir.join(skip)]
}

/// What a file of [`files`] holds and its shape, for messages.
pub fn describe(file: &Path) -> &'static str {
    match file.file_name().and_then(|n| n.to_str()).unwrap_or_default() {
        "dictionary.txt" => "the skip-thoughts words, one per line, its line numbers index the table",
        "utable.npy" => "the uni-skip word vectors, float32 [dictionary lines, 620]",
        "btable.npy" => "the bi-skip word vectors, float32 [dictionary lines, 620]",
        "uni_skip.npz" => {
            "the uni-skip GRU: encoder_W [620, 4800], encoder_U [2400, 4800], encoder_b [4800], \
             encoder_Wx [620, 2400], encoder_Ux [2400, 2400], encoder_bx [2400]"
        }
        _ => {
            "the bi-skip GRUs: encoder_* (forward) and encoder_r_* (backward), W [620, 2400], U [1200, 2400], \
             b [2400], Wx [620, 1200], Ux [1200, 1200], bx [1200]"
        }
    }
}

/// Fails, naming each missing file with what it holds, unless `dir` has the files of `kind`.
pub fn require(dir: &Path, kind: Seq2VecType) -> Result<()> {
    let missing: Vec<String> = files(dir, kind)
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| format!("{} ({})", p.file_name().unwrap_or_default().to_string_lossy(), describe(p)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "model.seq2vec.dir_st {} lacks {}; put the skip-thoughts files there (amfmn's README names the \
             downloads), or set model.seq2vec.pretrained: false to train the text encoder from random weights",
            dir.display(),
            missing.join("; ")
        );
    }
    Ok(())
}

/// The arrays of a variant's `.npz` file with their shapes (Theano layout).
pub fn expected_parameters(kind: Seq2VecType) -> Vec<(String, Vec<usize>)> {
    let w = WORD_DIM as usize;
    let gru = |prefix: &str, h: usize| {
        [
            ("W", vec![w, 2 * h]),
            ("U", vec![h, 2 * h]),
            ("b", vec![2 * h]),
            ("Wx", vec![w, h]),
            ("Ux", vec![h, h]),
            ("bx", vec![h]),
        ]
        .map(|(name, shape)| (format!("{prefix}{name}"), shape))
    };
    let h = SENTENCE_DIM as usize;
    match kind {
        Seq2VecType::BiSkip => gru("encoder_", h / 2).into_iter().chain(gru("encoder_r_", h / 2)).collect(),
        _ => gru("encoder_", h).to_vec(),
    }
}

/// One line of [`check`]'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (a file, a shape, the coverage of a vocabulary).
    pub what: String,
    /// What was found.
    pub found: String,
    pub ok: bool,
}

/// Validates a downloaded skip-thoughts set without training: the files of `kind` present,
/// the dictionary's lines = the table's rows, the table's width, every parameter's shape, and
/// (given a vocabulary) how many of its words the dictionary has.
pub fn check(dir: &Path, kind: Seq2VecType, words: Option<&[String]>) -> Vec<Check> {
    let [dictionary_path, table_path, skip_path] = files(dir, kind);
    let mut checks: Vec<Check> = [&dictionary_path, &table_path, &skip_path]
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => Check { what: name, found: format!("{} bytes", m.len()), ok: true },
                _ => Check { what: name, found: format!("missing: {}", describe(p)), ok: false },
            }
        })
        .collect();
    if checks.iter().any(|c| !c.ok) {
        return checks;
    }
    let outcome = |what: &str, result: Result<String>| match result {
        Ok(found) => Check { what: what.to_owned(), found, ok: true },
        Err(e) => Check { what: what.to_owned(), found: crate::fsutil::one_line(&format!("{e:#}")), ok: false },
    };
    let dictionary = crate::fsutil::read_to_string(&dictionary_path)
        .with_context(|| format!("cannot read {} as UTF-8 text", dictionary_path.display()));
    let table_name = table_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    checks.push(outcome(
        &format!("dictionary lines = {table_name} rows"),
        (|| {
            let lines = dictionary.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?.lines().count();
            let shape = npy::shape(&table_path)?;
            match shape.first() {
                Some(&rows) if rows == lines => Ok(format!("{lines} = {rows}")),
                _ => bail!("{lines} dictionary lines, but the table's shape is {shape:?}"),
            }
        })(),
    ));
    checks.push(outcome(
        &format!("{table_name} row width"),
        (|| {
            let row = npy::read_rows(&table_path, &[0])?;
            match row.row_len() == WORD_DIM as usize {
                true => Ok(format!("{WORD_DIM} values")),
                false => bail!("{} values, expected {WORD_DIM}", row.row_len()),
            }
        })(),
    ));
    checks.extend(parameter_checks(&skip_path, kind));
    if let (Some(words), Ok(text)) = (words, &dictionary) {
        let known: std::collections::HashSet<&str> = text.lines().map(str::trim).collect();
        let covered = words.iter().filter(|w| known.contains(w.as_str())).count();
        let found = format!(
            "{covered} of {} words ({:.1}%); the others take the UNK row",
            words.len(),
            100.0 * covered as f64 / words.len().max(1) as f64
        );
        checks.push(Check { what: "vocabulary coverage".into(), found, ok: known.contains("UNK") });
    }
    checks
}

/// One check per parameter array of `kind` in the `.npz` file.
fn parameter_checks(skip_path: &Path, kind: Seq2VecType) -> Vec<Check> {
    let name = skip_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let shapes = match npy::npz_shapes(skip_path) {
        Ok(shapes) => shapes,
        Err(e) => return vec![Check { what: name, found: crate::fsutil::one_line(&format!("{e:#}")), ok: false }],
    };
    expected_parameters(kind)
        .into_iter()
        .map(|(array, shape)| {
            let what = format!("{name}: {array}");
            match shapes.get(&array) {
                Some(found) if *found == shape => Check { what, found: format!("{shape:?}"), ok: true },
                Some(found) => Check { what, found: format!("shape {found:?}, expected {shape:?}"), ok: false },
                None => Check { what, found: format!("missing, expected {shape:?}"), ok: false },
            }
        })
        .collect()
}

/// Loads the pretrained embedding and GRU into `seq2vec` for the vocabulary `words` (id order,
/// ids from 1); a missing file is an error naming it ([`require`]).
pub fn load(seq2vec: &Seq2Vec, dir: &Path, words: &[String]) -> Result<Loaded> {
    let kind = seq2vec.encoder.kind();
    require(dir, kind)?;
    let [dictionary_path, table_path, skip_path] = files(dir, kind);
    let text = crate::fsutil::read_to_string(&dictionary_path)
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
    Ok(Loaded { unknown_words, vocabulary: words.len(), dictionary: dictionary.len() })
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
