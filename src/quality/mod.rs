//! Sample quality from feature vectors: the Fréchet distance between feature Gaussians (FID) and the
//! kernel inception distance (KID), against reference statistics; prompt accuracy from class logits; and the
//! error against a reference solve.

mod accuracy;
mod fid;
mod frame_change;
mod kid;
mod reference;
mod solve_error;
mod sums;

pub use accuracy::{Accuracy, Hits, accuracy, predicted_classes};
pub use fid::{FeatureStats, frechet_distance};
pub use frame_change::FrameChange;
pub use kid::{Kid, kernel_inception_distance};
pub use reference::{ReferenceError, ReferenceStats};
pub use solve_error::{SolveError, SquaredError, solve_error};
pub use sums::FeatureSums;
