//! Data half of the pipeline: precomp files, fold splits, image transforms, the loader, and the
//! synthetic demo set.

pub mod dataset;
pub mod image_file;
pub mod loader;
pub mod precomp;
pub mod split;
pub mod synthetic;
pub mod transforms;

pub use dataset::CaptionSet;
pub use loader::{ImageBatch, Loader, LoaderConfig, PairBatch};
pub use precomp::PrecompSplit;
pub use split::FoldSplit;
pub use transforms::Transform;
