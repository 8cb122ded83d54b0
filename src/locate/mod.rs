//! Semantic localisation in large scenes (SeLo, docs/LOCALISATION.md): the benchmark's annotations and
//! its four indicators, computed exactly as the authors' `SLM.py` does ([`selo`]) from image
//! primitives that match OpenCV, SciPy and scikit-image bit for bit ([`raster`]). The chain
//! crops → scores → map → indicators is tested with scorers that know the answer on the scenes of
//! `synth-scenes` (`tests/synth_scenes.rs`).

pub mod annotations;
pub mod codes;
pub mod crops;
pub mod heat;
pub mod map;
pub mod raster;
pub mod render;
pub mod selo;
